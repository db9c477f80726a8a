//! `--plot FILE.svg`: throughput (switchboard next to raw, per broker, mode and
//! size) above latency percentiles (per broker and size), on log scales.

use std::path::Path;

use plotters::drawing::DrawingAreaErrorKind;
use plotters::prelude::*;

use crate::report::Row;
use crate::target::Implementation;

const SWITCHBOARD: RGBColor = RGBColor(31, 119, 180);
const RAW: RGBColor = RGBColor(255, 127, 14);
const REFERENCE: RGBColor = RGBColor(150, 150, 150);
const PERCENTILES: [(&str, RGBColor); 4] = [
    ("p50", RGBColor(44, 160, 44)),
    ("p90", RGBColor(31, 119, 180)),
    ("p99", RGBColor(255, 127, 14)),
    ("p99.9", RGBColor(214, 39, 40)),
];

/// Draws the plot of `rows` into the SVG file `path`.
pub(crate) fn draw(rows: &[Row], path: &Path) -> Result<(), PlotError> {
    let root = SVGBackend::new(path, (1600, 1000)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(520);
    throughput(&top, rows)?;
    latency(&bottom, rows)?;
    root.present()?;
    drop(root);
    start_rotated_labels(path)
}

/// plotters centres rotated axis labels on their tick, so half of each label
/// would sit inside the chart: anchor them at their start instead (below the axis).
fn start_rotated_labels(path: &Path) -> Result<(), PlotError> {
    let svg = std::fs::read_to_string(path)?;
    let fixed: Vec<String> = svg
        .lines()
        .map(|line| {
            if line.starts_with("<text") && line.contains("transform=\"rotate(90,") {
                line.replace("text-anchor=\"middle\"", "text-anchor=\"start\"")
            } else {
                line.to_string()
            }
        })
        .collect();
    std::fs::write(path, fixed.join("\n") + "\n")?;
    Ok(())
}

/// Why the plot could not be drawn.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PlotError {
    /// plotters failed, usually because the file cannot be written.
    #[error(transparent)]
    Draw(#[from] DrawingAreaErrorKind<std::io::Error>),
    /// Reading the SVG back or rewriting it failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Distinct values in first-seen order.
fn distinct<T: PartialEq>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut out = Vec::new();
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

fn log_range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (mut low, mut high) = (f64::MAX, 0.0_f64);
    for v in values.filter(|v| *v > 0.0) {
        low = low.min(v);
        high = high.max(v);
    }
    if high <= 0.0 {
        return 1.0..10.0;
    }
    let low = 10f64.powf(low.log10().floor());
    let high = 10f64.powf(high.log10().ceil());
    low..high.max(low * 10.0)
}

fn throughput(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    rows: &[Row],
) -> Result<(), PlotError> {
    let rows: Vec<&Row> = rows
        .iter()
        .filter(|r| r.is_ok() && r.mode != "latency" && r.msgs_per_s.is_some())
        .collect();
    let groups = distinct(
        rows.iter()
            .map(|r| (r.broker.as_str(), r.mode.as_str(), r.size)),
    );
    let bars = [
        (Implementation::Switchboard.name(), SWITCHBOARD),
        (Implementation::Raw.name(), RAW),
        ("redis-benchmark", REFERENCE),
    ];
    let y = log_range(rows.iter().filter_map(|r| r.msgs_per_s));
    let mut chart = ChartBuilder::on(area)
        .caption(
            "Throughput (msg/s, log scale): switchboard vs raw client",
            ("sans-serif", 22),
        )
        .margin(10)
        .x_label_area_size(110)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..groups.len().max(1) as f64, y.clone().log_scale())?;
    let labels = groups.clone();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(groups.len().max(1) * 2 + 1)
        .x_label_formatter(&|x| {
            let index = x.floor() as usize;
            if (x - index as f64 - 0.5).abs() > 0.01 {
                return String::new();
            }
            labels
                .get(index)
                .map(|(b, m, s)| format!("{b} {m} {s}B"))
                .unwrap_or_default()
        })
        .x_label_style(
            ("sans-serif", 12)
                .into_font()
                .transform(FontTransform::Rotate90),
        )
        .y_desc("messages per second")
        .y_label_formatter(&|v| format!("{v:.0e}"))
        .draw()?;
    let width = 0.8 / bars.len() as f64;
    for (slot, (implementation, color)) in bars.iter().enumerate() {
        let rects: Vec<Rectangle<(f64, f64)>> = rows
            .iter()
            .filter(|r| r.implementation == *implementation)
            .filter_map(|r| {
                let g = groups
                    .iter()
                    .position(|g| *g == (r.broker.as_str(), r.mode.as_str(), r.size))?;
                let left = g as f64 + 0.1 + slot as f64 * width;
                Some(Rectangle::new(
                    [(left, y.start), (left + width * 0.95, r.msgs_per_s?)],
                    color.filled(),
                ))
            })
            .collect();
        if rects.is_empty() {
            continue;
        }
        chart
            .draw_series(rects)?
            .label(*implementation)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperMiddle)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()?;
    Ok(())
}

fn latency(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    rows: &[Row],
) -> Result<(), PlotError> {
    let rows: Vec<&Row> = rows
        .iter()
        .filter(|r| r.is_ok() && r.latency.is_some())
        .collect();
    let groups = distinct(rows.iter().map(|r| (r.broker.as_str(), r.size)));
    let y = log_range(
        rows.iter()
            .filter_map(|r| r.latency)
            .flat_map(|l| [l.p50_us, l.p90_us, l.p99_us, l.p999_us]),
    );
    let rate = rows.iter().find_map(|r| r.rate).unwrap_or(0);
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!(
                "One-way latency at {rate} msg/s (µs, log scale; from intended send time): solid = switchboard, light = raw"
            ),
            ("sans-serif", 22),
        )
        .margin(10)
        .x_label_area_size(60)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..groups.len().max(1) as f64, y.clone().log_scale())
        ?;
    let labels = groups.clone();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(groups.len().max(1) * 2 + 1)
        .x_label_formatter(&|x| {
            let index = x.floor() as usize;
            if (x - index as f64 - 0.5).abs() > 0.01 {
                return String::new();
            }
            labels
                .get(index)
                .map(|(b, s)| format!("{b} {s}B"))
                .unwrap_or_default()
        })
        .y_desc("microseconds")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    let width = 0.8 / 8.0;
    for (k, (name, color)) in PERCENTILES.iter().enumerate() {
        let mut rects = Vec::new();
        for row in &rows {
            let Some(g) = groups
                .iter()
                .position(|g| *g == (row.broker.as_str(), row.size))
            else {
                continue;
            };
            let (slot, style) = if row.implementation == Implementation::Switchboard.name() {
                (k, color.filled())
            } else {
                (4 + k, color.mix(0.35).filled())
            };
            let Some(l) = row.latency else { continue };
            let value = [l.p50_us, l.p90_us, l.p99_us, l.p999_us]
                .get(k)
                .copied()
                .unwrap_or(0.0);
            let left = g as f64 + 0.1 + slot as f64 * width;
            rects.push(Rectangle::new(
                [(left, y.start), (left + width * 0.9, value.max(y.start))],
                style,
            ));
        }
        if rects.is_empty() {
            continue;
        }
        let color = *color;
        chart
            .draw_series(rects)?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()?;
    Ok(())
}
