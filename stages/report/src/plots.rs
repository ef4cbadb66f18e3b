//! Line plots as SVG documents, drawn with `plotters`' SVG backend.

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::ReportError;

/// One line plot to draw.
#[derive(Debug, Clone)]
pub struct LinePlot<'a> {
    /// Caption drawn above the chart.
    pub caption: &'a str,
    /// Label of the x axis.
    pub x_label: &'a str,
    /// Label of the y axis.
    pub y_label: &'a str,
    /// The points, in x order.
    pub points: Vec<(f64, f64)>,
    /// Whether to draw the line as steps (for piecewise-constant series such
    /// as a batch size).
    pub steps: bool,
}

/// Keeps at most `max` points, evenly spaced, always keeping the last one.
pub fn thin(points: Vec<(f64, f64)>, max: usize) -> Vec<(f64, f64)> {
    let max = max.max(2);
    if points.len() <= max {
        return points;
    }
    let stride = points.len().div_ceil(max);
    let last = *points.last().expect("non-empty");
    let mut out: Vec<(f64, f64)> = points.into_iter().step_by(stride).collect();
    if out.last() != Some(&last) {
        out.push(last);
    }
    out
}

/// Axis range covering `values`, padded so that a constant series still gets
/// a visible range.
fn range(values: impl Iterator<Item = f64>, pad_fraction: f64) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    let span = hi - lo;
    if span <= f64::EPSILON * hi.abs().max(1.0) {
        let pad = if hi.abs() > 0.0 { hi.abs() * 0.1 } else { 1.0 };
        return (lo - pad, hi + pad);
    }
    (lo - span * pad_fraction, hi + span * pad_fraction)
}

/// A compact tick label: SI suffixes for large values, trailing zeros
/// trimmed (`20`, `2.05`, `0.125`), scientific for tiny ones.
fn tick(v: f64) -> String {
    let a = v.abs();
    let trim = |s: String| {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    };
    if a == 0.0 {
        "0".to_string()
    } else if a >= 1e9 {
        format!("{}G", trim(format!("{:.2}", v / 1e9)))
    } else if a >= 1e6 {
        format!("{}M", trim(format!("{:.2}", v / 1e6)))
    } else if a >= 1e4 {
        format!("{}k", trim(format!("{:.1}", v / 1e3)))
    } else if a >= 1e-2 {
        trim(format!("{v:.3}"))
    } else {
        format!("{v:.1e}")
    }
}

/// The axes of every plot: caption, margins, light grid, compact ticks.
fn chart<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, plotters::coord::Shift>,
    caption: &str,
    x_label: &str,
    y_label: &str,
    x_range: (f64, f64),
    y_range: (f64, f64),
) -> Result<
    ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    DrawingAreaErrorKind<std::io::Error>,
> {
    let mut chart = ChartBuilder::on(root)
        .caption(caption, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(x_range.0..x_range.1, y_range.0..y_range.1)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .x_labels(8)
        .y_labels(6)
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| tick(*v))
        .light_line_style(RGBColor(236, 238, 242))
        .bold_line_style(RGBColor(214, 218, 226))
        .axis_desc_style(("sans-serif", 15))
        .label_style(("sans-serif", 13))
        .draw()?;
    Ok(chart)
}

/// Draws `plot` into an SVG document of `size` pixels.
pub fn line_svg(plot: &LinePlot<'_>, size: (u32, u32)) -> Result<String, ReportError> {
    let err = |e: &dyn std::fmt::Display| ReportError::Plot {
        plot: plot.caption.to_string(),
        message: e.to_string(),
    };
    let points: Vec<(f64, f64)> = plot
        .points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let x_range = range(points.iter().map(|p| p.0), 0.0);
        let y_range = range(points.iter().map(|p| p.1), 0.05);
        let mut chart = chart(
            &root,
            plot.caption,
            plot.x_label,
            plot.y_label,
            x_range,
            y_range,
        )
        .map_err(|e| err(&e))?;
        let line = ShapeStyle::from(&RGBColor(36, 88, 179)).stroke_width(2);
        let drawn: Vec<(f64, f64)> = if plot.steps {
            let mut stepped = Vec::with_capacity(points.len() * 2);
            for (i, p) in points.iter().enumerate() {
                if i > 0 {
                    stepped.push((p.0, points[i - 1].1));
                }
                stepped.push(*p);
            }
            stepped
        } else {
            points.clone()
        };
        chart
            .draw_series(LineSeries::new(drawn, line))
            .map_err(|e| err(&e))?;
        if points.len() == 1 {
            chart
                .draw_series(points.iter().map(|p| Circle::new(*p, 4, line.filled())))
                .map_err(|e| err(&e))?;
        }
        root.present().map_err(|e| err(&e))?;
    }
    Ok(svg)
}

/// Colours of overlaid series, in order (then repeated).
const PALETTE: [RGBColor; 8] = [
    RGBColor(36, 88, 179),
    RGBColor(214, 96, 39),
    RGBColor(46, 140, 72),
    RGBColor(166, 52, 134),
    RGBColor(120, 120, 120),
    RGBColor(190, 160, 20),
    RGBColor(20, 150, 170),
    RGBColor(200, 40, 60),
];

/// Draws several named series over one pair of axes, with a legend.
pub fn multi_line_svg(
    caption: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
    size: (u32, u32),
) -> Result<String, ReportError> {
    let err = |e: &dyn std::fmt::Display| ReportError::Plot {
        plot: caption.to_string(),
        message: e.to_string(),
    };
    let finite = |pts: &Vec<(f64, f64)>| -> Vec<(f64, f64)> {
        pts.iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect()
    };
    let series: Vec<(&String, Vec<(f64, f64)>)> =
        series.iter().map(|(n, p)| (n, finite(p))).collect();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let all = || series.iter().flat_map(|(_, p)| p.iter().copied());
        let x_range = range(all().map(|p| p.0), 0.0);
        let y_range = range(all().map(|p| p.1), 0.05);
        let mut chart =
            chart(&root, caption, x_label, y_label, x_range, y_range).map_err(|e| err(&e))?;
        for (i, (name, points)) in series.iter().enumerate() {
            let colour = PALETTE[i % PALETTE.len()];
            let line = ShapeStyle::from(&colour).stroke_width(2);
            chart
                .draw_series(LineSeries::new(points.clone(), line))
                .map_err(|e| err(&e))?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(214, 218, 226))
            .label_font(("sans-serif", 13))
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlaid_series_have_a_legend() {
        let series = vec![
            ("lr=1e-3".to_string(), vec![(0.0, 5.0), (1.0, 4.0)]),
            ("lr=5e-4".to_string(), vec![(0.0, 5.5), (1.0, 4.5)]),
        ];
        let svg = multi_line_svg("Loss", "tokens", "loss", &series, (640, 320)).unwrap();
        assert!(svg.matches("<polyline").count() >= 2, "{svg}");
        assert!(svg.contains("lr=1e-3") && svg.contains("lr=5e-4"));
    }

    #[test]
    fn draws_an_svg_with_labels() {
        let plot = LinePlot {
            caption: "Loss & tokens",
            x_label: "tokens",
            y_label: "loss",
            points: (0..50)
                .map(|i| (i as f64 * 1e5, 10.0 / (1.0 + i as f64)))
                .collect(),
            steps: false,
        };
        let svg = line_svg(&plot, (640, 320)).unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("Loss &amp; tokens"));
        assert!(svg.contains("<polyline"));
        assert!(svg.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn constant_and_single_point_series_draw() {
        for points in [vec![(1.0, 3.0)], vec![(0.0, 5.0), (1.0, 5.0)], vec![]] {
            let plot = LinePlot {
                caption: "c",
                x_label: "x",
                y_label: "y",
                points,
                steps: true,
            };
            assert!(line_svg(&plot, (300, 200)).is_ok());
        }
    }

    #[test]
    fn ticks_are_compact() {
        assert_eq!(tick(20.0), "20");
        assert_eq!(tick(2.05), "2.05");
        assert_eq!(tick(2_500_000.0), "2.5M");
        assert_eq!(tick(15_000.0), "15k");
        assert_eq!(tick(0.0004), "4.0e-4");
    }

    #[test]
    fn thinning_keeps_ends() {
        let pts: Vec<(f64, f64)> = (0..1001).map(|i| (i as f64, 0.0)).collect();
        let out = thin(pts, 100);
        assert!(out.len() <= 102);
        assert_eq!(out.first().unwrap().0, 0.0);
        assert_eq!(out.last().unwrap().0, 1000.0);
    }
}
