//! `switchboard worker --asyncapi`: the AsyncAPI 3.0 document of a reactions
//! file, from the worker library's `asyncapi` module.

use std::path::Path;

use switchboard::worker::asyncapi::AsyncApi;

use super::config::Config;

/// How the document is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// YAML, as AsyncAPI documents are usually read.
    Yaml,
    /// JSON, pretty-printed.
    Json,
}

/// The document of `config` (read from `path`) with the broker at `url` as
/// its server, as text ending with a newline.
pub(crate) fn render(
    url: &str,
    path: &Path,
    config: &Config,
    format: Format,
) -> anyhow::Result<String> {
    let url = switchboard::resolve_url(url);
    let title = config.asyncapi.title.clone().unwrap_or_else(|| {
        path.file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .unwrap_or_else(|| "switchboard worker".to_string())
    });
    let mut document = AsyncApi::new(title, config.asyncapi.version.as_deref().unwrap_or("0.0.0"));
    if let Some(description) = &config.asyncapi.description {
        document = document.description(description.as_str());
    }
    let document = document.server_url(url)?;
    // The document describes the routes, not what runs them.
    let routes: Vec<_> = config
        .routes
        .iter()
        .map(|route| route.route(super::config::unhandled()))
        .collect();
    let document = document.document(&routes);
    let mut text = match format {
        Format::Yaml => serde_norway::to_string(&document)?,
        Format::Json => serde_json::to_string_pretty(&document)?,
    };
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}
