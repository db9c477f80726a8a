//! `--plot FILE.svg`: throughput (switchboard next to raw, per broker, mode and
//! size) above latency percentiles (per broker and size), on log scales.

use std::ops::Range;
use std::path::Path;

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
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

/// A log axis from the power of ten below the smallest positive value to the
/// one above the largest (at least one decade).
fn log_range(values: impl Iterator<Item = f64>) -> Range<f64> {
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

/// How one bar chart looks, where the two charts differ.
struct Layout {
    caption: String,
    /// The label under each group of bars, left to right.
    groups: Vec<String>,
    /// The y axis, drawn on a log scale.
    y: Range<f64>,
    y_desc: &'static str,
    y_format: fn(&f64) -> String,
    /// Room below the axis for the group labels.
    x_label_area: u32,
    /// Group labels written downwards (long ones), instead of across.
    rotate_labels: bool,
}

type Chart<'a, 'p> = ChartContext<'a, SVGBackend<'p>, Cartesian2d<RangedCoordf64, LogCoord<f64>>>;

/// An empty chart on `area`: one slot per group on x (bar `k` of a group at
/// `group + 0.1 + k × width`), its label under the slot's centre, a log y axis.
fn bar_chart<'a, 'p>(
    area: &'a DrawingArea<SVGBackend<'p>, Shift>,
    layout: &Layout,
) -> Result<Chart<'a, 'p>, PlotError> {
    let slots = layout.groups.len().max(1);
    let mut chart = ChartBuilder::on(area)
        .caption(&layout.caption, ("sans-serif", 22))
        .margin(10)
        .x_label_area_size(layout.x_label_area)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..slots as f64, layout.y.clone().log_scale())?;
    let label = |x: &f64| {
        let index = x.floor() as usize;
        if (x - index as f64 - 0.5).abs() > 0.01 {
            return String::new();
        }
        layout.groups.get(index).cloned().unwrap_or_default()
    };
    let rotated = ("sans-serif", 12)
        .into_font()
        .transform(FontTransform::Rotate90);
    let mut mesh = chart.configure_mesh();
    mesh.disable_x_mesh()
        .x_labels(slots * 2 + 1)
        .x_label_formatter(&label)
        .y_desc(layout.y_desc)
        .y_label_formatter(&layout.y_format);
    if layout.rotate_labels {
        mesh.x_label_style(rotated);
    }
    mesh.draw()?;
    Ok(chart)
}

/// Draws one series of bars, named `name` in the legend in `color`; nothing
/// (and no legend entry) when there are no bars.
fn bars(
    chart: &mut Chart<'_, '_>,
    rects: Vec<Rectangle<(f64, f64)>>,
    name: &str,
    color: RGBColor,
) -> Result<(), PlotError> {
    if rects.is_empty() {
        return Ok(());
    }
    chart
        .draw_series(rects)?
        .label(name)
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    Ok(())
}

/// Draws the legend of the series drawn so far.
fn legend<'a, 'p: 'a>(
    chart: &mut Chart<'a, 'p>,
    position: SeriesLabelPosition,
) -> Result<(), PlotError> {
    chart
        .configure_series_labels()
        .position(position)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()?;
    Ok(())
}

/// Throughput bars: one group per broker, mode and size; switchboard, raw and
/// `redis-benchmark` side by side.
fn throughput(area: &DrawingArea<SVGBackend<'_>, Shift>, rows: &[Row]) -> Result<(), PlotError> {
    let rows: Vec<&Row> = rows
        .iter()
        .filter(|r| r.is_ok() && r.mode != "latency" && r.msgs_per_s.is_some())
        .collect();
    let groups = distinct(
        rows.iter()
            .map(|r| (r.broker.as_str(), r.mode.as_str(), r.size)),
    );
    let layout = Layout {
        caption: "Throughput (msg/s, log scale): switchboard vs raw client".to_string(),
        groups: groups
            .iter()
            .map(|(b, m, s)| format!("{b} {m} {s}B"))
            .collect(),
        y: log_range(rows.iter().filter_map(|r| r.msgs_per_s)),
        y_desc: "messages per second",
        y_format: |v| format!("{v:.0e}"),
        x_label_area: 110,
        rotate_labels: true,
    };
    let mut chart = bar_chart(area, &layout)?;
    let series = [
        (Implementation::Switchboard.name(), SWITCHBOARD),
        (Implementation::Raw.name(), RAW),
        ("redis-benchmark", REFERENCE),
    ];
    let width = 0.8 / series.len() as f64;
    for (slot, (implementation, color)) in series.iter().enumerate() {
        let rects: Vec<Rectangle<(f64, f64)>> = rows
            .iter()
            .filter(|r| r.implementation == *implementation)
            .filter_map(|r| {
                let g = groups
                    .iter()
                    .position(|g| *g == (r.broker.as_str(), r.mode.as_str(), r.size))?;
                let left = g as f64 + 0.1 + slot as f64 * width;
                Some(Rectangle::new(
                    [(left, layout.y.start), (left + width * 0.95, r.msgs_per_s?)],
                    color.filled(),
                ))
            })
            .collect();
        bars(&mut chart, rects, implementation, *color)?;
    }
    legend(&mut chart, SeriesLabelPosition::UpperMiddle)
}

/// Latency percentiles: one group per broker and size; p50 to p99.9 of
/// switchboard (solid), then of the raw client (light).
fn latency(area: &DrawingArea<SVGBackend<'_>, Shift>, rows: &[Row]) -> Result<(), PlotError> {
    let rows: Vec<&Row> = rows
        .iter()
        .filter(|r| r.is_ok() && r.latency.is_some())
        .collect();
    let groups = distinct(rows.iter().map(|r| (r.broker.as_str(), r.size)));
    let rate = rows.iter().find_map(|r| r.rate).unwrap_or(0);
    let layout = Layout {
        caption: format!(
            "One-way latency at {rate} msg/s (µs, log scale; from intended send time): solid = switchboard, light = raw"
        ),
        groups: groups.iter().map(|(b, s)| format!("{b} {s}B")).collect(),
        y: log_range(
            rows.iter()
                .filter_map(|r| r.latency)
                .flat_map(|l| [l.p50_us, l.p90_us, l.p99_us, l.p999_us]),
        ),
        y_desc: "microseconds",
        y_format: |v| format!("{v:.0}"),
        x_label_area: 60,
        rotate_labels: false,
    };
    let mut chart = bar_chart(area, &layout)?;
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
                [
                    (left, layout.y.start),
                    (left + width * 0.9, value.max(layout.y.start)),
                ],
                style,
            ));
        }
        bars(&mut chart, rects, name, *color)?;
    }
    legend(&mut chart, SeriesLabelPosition::MiddleRight)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Latency;
    use crate::Mode;

    fn rows() -> Vec<Row> {
        let mut rows = Vec::new();
        for (implementation, factor) in [("switchboard", 1.1), ("raw", 1.0)] {
            let mut row = Row::blank("nats", "nats://h:4222", Mode::Pub, 16, implementation);
            row.msgs_per_s = Some(1e6 / factor);
            rows.push(row);
            let mut row = Row::blank("nats", "nats://h:4222", Mode::Latency, 16, implementation);
            row.rate = Some(10_000);
            row.msgs_per_s = Some(10_000.0);
            row.latency = Some(Latency {
                p50_us: 80.0 * factor,
                p90_us: 120.0 * factor,
                p99_us: 400.0 * factor,
                p999_us: 900.0 * factor,
                max_us: 1000.0 * factor,
            });
            rows.push(row);
        }
        let mut failed = Row::blank("redis", "redis://h:6379", Mode::Pub, 16, "switchboard");
        failed.fail("unavailable", "no answer".to_string());
        rows.push(failed);
        rows
    }

    /// The text of every `<text>` element, and whether it is rotated and anchored at its start.
    fn texts(svg: &str) -> Vec<(String, bool, bool)> {
        let lines: Vec<&str> = svg.lines().collect();
        lines
            .windows(2)
            .filter(|pair| pair[0].starts_with("<text"))
            .map(|pair| {
                (
                    pair[1].trim().to_string(),
                    pair[0].contains("transform=\"rotate(90,"),
                    pair[0].contains("text-anchor=\"start\""),
                )
            })
            .collect()
    }

    #[test]
    fn draws_throughput_above_latency_with_labels_below_the_bars() {
        let path =
            std::env::temp_dir().join(format!("switchboard-bench-plot-{}.svg", std::process::id()));
        draw(&rows(), &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        let texts = texts(&svg);
        let has = |text: &str| texts.iter().any(|(t, _, _)| t == text);
        assert!(has(
            "Throughput (msg/s, log scale): switchboard vs raw client"
        ));
        assert!(texts
            .iter()
            .any(|(t, _, _)| t.starts_with("One-way latency at 10000 msg/s")));
        // Group labels: rotated under the throughput bars, across under the latency ones.
        assert!(texts.contains(&("nats pub 16B".to_string(), true, true)));
        assert!(texts.contains(&("nats 16B".to_string(), false, false)));
        assert!(texts
            .iter()
            .filter(|(_, rotated, _)| *rotated)
            .all(|(_, _, start)| *start));
        // A legend entry per series drawn, none for series without bars.
        for legend in ["switchboard", "raw", "p50", "p90", "p99", "p99.9"] {
            assert!(has(legend), "no legend {legend}");
        }
        assert!(!has("redis-benchmark"));
        assert!(
            !texts.iter().any(|(t, _, _)| t.starts_with("redis")),
            "failed rows are not drawn"
        );
    }
}
