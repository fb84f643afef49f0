//! Learning-curve and recall–precision charts drawn with plotters into an RGB buffer, encoded as
//! PNG with the `image` crate and written atomically. The font is embedded, so nothing is looked
//! up on the system.

use crate::error::{Error, Result};
use crate::metrics::sweep::SweepRow;
use crate::report::runs::Curves;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};
use std::path::Path;
use std::sync::Once;

const WIDTH: u32 = 800;
const HEIGHT: u32 = 500;
static FONT: Once = Once::new();

fn ensure_font() {
    FONT.call_once(|| {
        let bytes: &'static [u8] = include_bytes!("../../assets/fonts/DejaVuSansMono.ttf");
        if register_font("sans-serif", FontStyle::Normal, bytes).is_err() {
            tracing::warn!("could not register the embedded font; charts will lack text");
        }
    });
}

fn draw_error(path: &Path) -> impl Fn(String) -> Error + '_ {
    move |e| Error::input(path, format!("cannot draw chart: {e}"))
}

/// Encodes an RGB buffer as PNG at `path`, atomically.
fn save_png(path: &Path, buffer: Vec<u8>) -> Result<()> {
    let img = image::RgbImage::from_raw(WIDTH, HEIGHT, buffer)
        .ok_or_else(|| Error::input(path, "chart buffer has the wrong size"))?;
    let mut bytes = std::io::Cursor::new(Vec::new());
    img.write_to(&mut bytes, image::ImageFormat::Png)
        .map_err(|e| Error::input(path, format!("cannot encode PNG: {e}")))?;
    crate::atomic::write_atomic(path, &bytes.into_inner())
}

/// One line of a chart: name, y values (non-finite ones are left out) and colour.
type Series<'a> = (&'a str, &'a [f64], RGBColor);

/// How the x axis is labelled, and an optional labelled vertical marker.
#[derive(Debug, Clone, Copy, Default)]
struct Axis<'a> {
    /// Ticks only at whole numbers (epochs).
    integer_ticks: bool,
    /// A vertical line at this x, with its label.
    marker: Option<(f64, &'a str)>,
}

/// Draws a chart of named series over a shared x axis (y in [0, y_max]).
fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    x: &[f64],
    series: &[Series],
    axis: Axis,
) -> Result<()> {
    ensure_font();
    let mut buffer = vec![255u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, (WIDTH, HEIGHT)).into_drawing_area();
        let err = draw_error(path);
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let x_min = x.iter().copied().fold(f64::INFINITY, f64::min);
        let x_max = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let (x_min, x_max) = if x_min < x_max {
            (x_min, x_max)
        } else {
            (x_min - 1.0, x_min + 1.0)
        };
        // Epoch axes get a little room at both ends, so a marker on the last epoch shows.
        let pad = if axis.integer_ticks { 0.3 } else { 0.0 };
        let (x_min, x_max) = (x_min - pad, x_max + pad);
        let y_max = series
            .iter()
            .flat_map(|(_, ys, _)| ys.iter().copied())
            .filter(|v| v.is_finite())
            .fold(1.0f64, f64::max);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(x_min..x_max, 0.0..y_max * 1.02)
            .map_err(|e| err(e.to_string()))?;
        let whole = |v: &f64| format!("{v:.0}");
        let mut mesh = chart.configure_mesh();
        mesh.x_desc(x_label).label_style(("sans-serif", 14));
        if axis.integer_ticks {
            // A tick step of at least 1: at most one label per whole number.
            let span = (x_max - x_min - 2.0 * pad).round().max(1.0) as usize;
            mesh.x_labels(span.min(10) + 1).x_label_formatter(&whole);
        }
        mesh.draw().map_err(|e| err(e.to_string()))?;
        if let Some((at, label)) = axis.marker {
            let green = RGBColor(20, 150, 60);
            chart
                .draw_series(LineSeries::new(
                    vec![(at, 0.0), (at, y_max * 1.02)],
                    green.stroke_width(3),
                ))
                .map_err(|e| err(e.to_string()))?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], green));
        }
        for (name, ys, color) in series {
            let points: Vec<(f64, f64)> = x
                .iter()
                .zip(ys.iter())
                .filter(|(_, y)| y.is_finite())
                .map(|(a, b)| (*a, *b))
                .collect();
            let color = *color;
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                .map_err(|e| err(e.to_string()))?
                .label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
            chart
                .draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled())))
                .map_err(|e| err(e.to_string()))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(|e| err(e.to_string()))?;
        root.present().map_err(|e| err(e.to_string()))?;
    }
    save_png(path, buffer)
}

/// Losses, recall, precision and Dice by epoch, with the kept epoch marked.
pub fn learning_curve(path: &Path, run_id: &str, c: &Curves, kept: Option<i32>) -> Result<()> {
    let label = kept.map(|e| format!("kept epoch {e}"));
    line_chart(
        path,
        &format!("{run_id}: learning curve"),
        "epoch",
        &c.epoch,
        &[
            ("train loss", &c.train_loss, RGBColor(120, 120, 120)),
            ("val loss", &c.val_loss, BLACK),
            ("val recall", &c.val_recall, RGBColor(200, 30, 30)),
            ("val precision", &c.val_precision, RGBColor(230, 150, 20)),
            ("val Dice", &c.val_dice, RGBColor(30, 90, 200)),
        ],
        Axis {
            integer_ticks: true,
            marker: kept.zip(label.as_deref()).map(|(e, l)| (f64::from(e), l)),
        },
    )
}

/// Precision against recall across the evaluation's thresholds; thresholds at which nothing is
/// predicted have no precision and are left out (no line to (0, 1)).
pub fn recall_precision(path: &Path, run_id: &str, sweep: &[SweepRow]) -> Result<()> {
    let mut rows: Vec<SweepRow> = sweep
        .iter()
        .filter(|r| r.defined_precision().is_some())
        .copied()
        .collect();
    rows.sort_by(|a, b| a.recall.total_cmp(&b.recall));
    let recall: Vec<f64> = rows.iter().map(|r| r.recall).collect();
    let precision: Vec<f64> = rows.iter().map(|r| r.precision).collect();
    line_chart(
        path,
        &format!("{run_id}: precision vs recall (thresholds 0.05-0.95)"),
        "recall",
        &recall,
        &[("precision", &precision, RGBColor(30, 90, 200))],
        Axis::default(),
    )
}
