//! SVG charts of benchmark results, drawn with `plotters`' SVG backend.
//!
//! Only the SVG backend is used, without a font feature: `plotters` then estimates text sizes
//! itself and the SVG carries its labels as `<text>` elements, so no font needs to be installed
//! on the host; the viewer renders them with its own sans-serif font.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Chart size in pixels.
const SIZE: (u32, u32) = (960, 600);
/// Line colours, one per series in order.
const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
];
/// Colours of the reference markers.
const MARKER_COLORS: [RGBColor; 3] = [RGBColor(214, 39, 40), RGBColor(0, 0, 0), RGBColor(127, 127, 127)];
const FONT: &str = "sans-serif";

/// A named series of (x, y) points.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

impl Series {
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series {
            name: name.into(),
            points,
        }
    }
}

/// A line chart: series drawn as lines with dots, reference points as distinct markers
/// (triangles, then crosses) without lines.
#[derive(Clone, Debug, Default)]
pub struct LineChart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    /// Both axes logarithmic (all values must be positive).
    pub log_log: bool,
    pub series: &'a [Series],
    pub markers: &'a [Series],
}

fn draw_err<E: std::error::Error + Send + Sync + 'static>(e: DrawingAreaErrorKind<E>) -> anyhow::Error {
    anyhow!("drawing the chart: {e}")
}

/// The range of `values` with 5 % room on each side (log: a factor of 1.25).
fn range(values: impl Iterator<Item = f64>, log: bool, from_zero: bool) -> Result<(f64, f64)> {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values {
        if !v.is_finite() || (log && v <= 0.0) {
            bail!(
                "value {v} cannot be drawn{}",
                if log { " on a log axis" } else { "" }
            );
        }
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if lo > hi {
        bail!("nothing to draw");
    }
    Ok(if log {
        (lo / 1.25, hi * 1.25)
    } else {
        let lo = if from_zero { lo.min(0.0) } else { lo };
        let pad = ((hi - lo) * 0.05).max(hi.abs() * 0.05).max(1e-9);
        (if from_zero && lo >= 0.0 { 0.0 } else { lo - pad }, hi + pad)
    })
}

/// A label for an axis value: integers without decimals, small values with up to three.
pub fn number(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if a >= 100.0 || (v.fract() == 0.0 && a >= 1.0) {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.1}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Draws `chart` into the SVG file `path`.
pub fn lines(path: &Path, chart: &LineChart) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let all = || {
        chart
            .series
            .iter()
            .chain(chart.markers)
            .flat_map(|s| s.points.iter().copied())
    };
    let x = range(all().map(|p| p.0), chart.log_log, false)?;
    let y = range(all().map(|p| p.1), chart.log_log, !chart.log_log)?;
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    if chart.log_log {
        let mut c = builder(&root, chart.title)
            .build_cartesian_2d((x.0..x.1).log_scale(), (y.0..y.1).log_scale())
            .map_err(draw_err)?;
        mesh(&mut c, chart)?;
        series(&mut c, chart)?;
    } else {
        let mut c = builder(&root, chart.title)
            .build_cartesian_2d(x.0..x.1, y.0..y.1)
            .map_err(draw_err)?;
        mesh(&mut c, chart)?;
        series(&mut c, chart)?;
    }
    root.present().map_err(draw_err)?;
    Ok(())
}

fn builder<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, Shift>,
    title: &str,
) -> ChartBuilder<'a, 'b, SVGBackend<'b>> {
    let mut b = ChartBuilder::on(root);
    b.caption(title, (FONT, 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(80);
    b
}

fn mesh<'b, X, Y>(
    c: &mut ChartContext<'b, SVGBackend<'b>, Cartesian2d<X, Y>>,
    chart: &LineChart,
) -> Result<()>
where
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    c.configure_mesh()
        .x_desc(chart.x_label)
        .y_desc(chart.y_label)
        .x_label_formatter(&|v| number(*v))
        .y_label_formatter(&|v| number(*v))
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(draw_err)
}

fn series<'b, X, Y>(
    c: &mut ChartContext<'b, SVGBackend<'b>, Cartesian2d<X, Y>>,
    chart: &LineChart,
) -> Result<()>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    for (i, s) in chart.series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        c.draw_series(LineSeries::new(s.points.iter().copied(), color.stroke_width(2)))
            .map_err(draw_err)?
            .label(s.name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        c.draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(draw_err)?;
    }
    for (i, m) in chart.markers.iter().enumerate() {
        let color = MARKER_COLORS[i % MARKER_COLORS.len()];
        if i % 2 == 0 {
            c.draw_series(
                m.points
                    .iter()
                    .map(|&p| TriangleMarker::new(p, 8, color.filled())),
            )
            .map_err(draw_err)?
            .label(m.name.as_str())
            .legend(move |(x, y)| TriangleMarker::new((x + 10, y), 7, color.filled()));
        } else {
            c.draw_series(m.points.iter().map(|&p| Cross::new(p, 7, color.stroke_width(3))))
                .map_err(draw_err)?
                .label(m.name.as_str())
                .legend(move |(x, y)| Cross::new((x + 10, y), 6, color.stroke_width(3)));
        }
    }
    c.configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(180, 180, 180))
        .label_font((FONT, 14))
        .draw()
        .map_err(draw_err)
}

/// A bar chart comparing Tessera with a reference: one group per `(label, tessera, reference)`
/// row, the reference bar left out where there is none. `reference` names the reference in the
/// legend (for example "Linux 6.12, same QEMU and CPU model").
pub fn bars(
    path: &Path,
    title: &str,
    y_label: &str,
    reference: &str,
    rows: &[(&str, f64, Option<f64>)],
) -> Result<()> {
    if rows.is_empty() {
        bail!("no bars to draw");
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let values = rows.iter().flat_map(|r| std::iter::once(r.1).chain(r.2));
    if values.clone().any(|v| !v.is_finite() || v < 0.0) {
        bail!("bar values must be finite and not negative");
    }
    let max = values.fold(0.0, f64::max).max(1e-9) * 1.15;
    let n = rows.len();
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    let mut c = builder(&root, title)
        .build_cartesian_2d(-0.5..n as f64 - 0.5, 0.0..max)
        .map_err(draw_err)?;
    // Group i is centred on x = i; the formatter names the integer positions only.
    let label_of = |v: &f64| {
        let i = v.round();
        if (v - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < n {
            rows[i as usize].0.to_string()
        } else {
            String::new()
        }
    };
    c.configure_mesh()
        .disable_x_mesh()
        .x_labels(n + 1)
        .x_label_formatter(&label_of)
        .y_label_formatter(&|v| number(*v))
        .y_desc(y_label)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(draw_err)?;
    let ours = COLORS[0];
    let theirs = MARKER_COLORS[0];
    let bar = |i: usize, left: f64, right: f64, v: f64, color: RGBColor| {
        Rectangle::new([(i as f64 + left, 0.0), (i as f64 + right, v)], color.filled())
    };
    c.draw_series(rows.iter().enumerate().map(|(i, r)| {
        if r.2.is_some() {
            bar(i, -0.36, -0.02, r.1, ours)
        } else {
            bar(i, -0.2, 0.2, r.1, ours)
        }
    }))
    .map_err(draw_err)?
    .label("Tessera")
    .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 16, y + 6)], ours.filled()));
    c.draw_series(
        rows.iter()
            .enumerate()
            .filter_map(|(i, r)| r.2.map(|v| bar(i, 0.02, 0.36, v, theirs))),
    )
    .map_err(draw_err)?
    .label(reference)
    .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 16, y + 6)], theirs.filled()));
    let text = (FONT, 13)
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Center, VPos::Bottom));
    c.draw_series(rows.iter().enumerate().flat_map(|(i, r)| {
        let (ours_at, theirs_at) = if r.2.is_some() { (-0.19, 0.19) } else { (0.0, 0.0) };
        std::iter::once(Text::new(number(r.1), (i as f64 + ours_at, r.1), text.clone()))
            .chain(r.2.map(|v| Text::new(number(v), (i as f64 + theirs_at, v), text.clone())))
    }))
    .map_err(draw_err)?;
    c.configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(180, 180, 180))
        .label_font((FONT, 14))
        .draw()
        .map_err(draw_err)?;
    root.present().map_err(draw_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> std::path::PathBuf {
        std::env::temp_dir()
            .join(format!("tessera-plot-{}", std::process::id()))
            .join(name)
    }

    #[test]
    fn line_chart_svg_names_its_series_and_markers() {
        let path = temp("lines.svg");
        let series = [
            Series::new(
                "Copy, 64 KiB folios",
                vec![(1.0, 0.2), (16.0, 3.3), (256.0, 52.2)],
            ),
            Series::new("ShareTables", vec![(1.0, 0.05), (16.0, 0.06), (256.0, 0.34)]),
        ];
        let markers = [
            Series::new("Linux 64 KiB mTHP", vec![(256.0, 10.9)]),
            Series::new("Linux 4 KiB", vec![(256.0, 13.6)]),
        ];
        let chart = LineChart {
            title: "fork",
            x_label: "region MiB",
            y_label: "virtual ms",
            log_log: true,
            series: &series,
            markers: &markers,
        };
        lines(&path, &chart).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        for text in [
            "Copy, 64 KiB folios",
            "ShareTables",
            "Linux 64 KiB mTHP",
            "Linux 4 KiB",
            "region MiB",
            "virtual ms",
            "\nfork\n",
        ] {
            assert!(svg.contains(text), "{text} missing from\n{svg}");
        }
        assert!(
            svg.contains("<polyline") || svg.contains("<path"),
            "no line drawn"
        );
        let linear = LineChart {
            log_log: false,
            ..chart
        };
        lines(&path, &linear).unwrap();
        let bad = [Series::new("zero", vec![(0.0, 1.0)])];
        let log_zero = LineChart {
            series: &bad,
            markers: &[],
            ..chart
        };
        assert!(lines(&path, &log_zero)
            .unwrap_err()
            .to_string()
            .contains("log axis"));
    }

    #[test]
    fn bar_chart_svg_names_groups_and_series() {
        let path = temp("bars.svg");
        bars(
            &path,
            "null system call",
            "virtual ns",
            "Linux 6.12, same QEMU and CPU model",
            &[
                ("getppid", 323.0, Some(506.0)),
                ("exec to exit", 1_637_439.0, None),
            ],
        )
        .unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        for text in [
            "getppid",
            "exec to exit",
            "Tessera",
            "Linux 6.12, same QEMU and CPU model",
            "null system call",
            "\n323\n",
            "\n506\n",
        ] {
            assert!(svg.contains(text), "{text} missing from\n{svg}");
        }
        assert!(bars(&path, "t", "y", "r", &[]).is_err());
        assert!(bars(&path, "t", "y", "r", &[("a", f64::NAN, None)]).is_err());
    }

    #[test]
    fn axis_numbers() {
        assert_eq!(number(0.0), "0");
        assert_eq!(number(256.0), "256");
        assert_eq!(number(1024.4), "1024");
        assert_eq!(number(2.5), "2.5");
        assert_eq!(number(0.05), "0.05");
        assert_eq!(number(0.1234), "0.123");
    }
}
