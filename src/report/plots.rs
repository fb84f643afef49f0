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

/// Draws a chart of named series over a shared x axis (y in [0, y_max]).
fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    x: &[f64],
    series: &[(&str, &[f64], RGBColor)],
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
        chart
            .configure_mesh()
            .x_desc(x_label)
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(|e| err(e.to_string()))?;
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

/// Loss, recall and Dice by epoch.
pub fn learning_curve(path: &Path, run_id: &str, c: &Curves) -> Result<()> {
    line_chart(
        path,
        &format!("{run_id}: learning curve"),
        "epoch",
        &c.epoch,
        &[
            ("train loss", &c.train_loss, RGBColor(120, 120, 120)),
            ("val loss", &c.val_loss, BLACK),
            ("val recall", &c.val_recall, RGBColor(200, 30, 30)),
            ("val Dice", &c.val_dice, RGBColor(30, 90, 200)),
        ],
    )
}

/// Precision against recall across the evaluation's thresholds.
pub fn recall_precision(path: &Path, run_id: &str, sweep: &[SweepRow]) -> Result<()> {
    let mut rows = sweep.to_vec();
    rows.sort_by(|a, b| a.recall.total_cmp(&b.recall));
    let recall: Vec<f64> = rows.iter().map(|r| r.recall).collect();
    let precision: Vec<f64> = rows.iter().map(|r| r.precision).collect();
    line_chart(
        path,
        &format!("{run_id}: precision vs recall (thresholds 0.05-0.95)"),
        "recall",
        &recall,
        &[("precision", &precision, RGBColor(30, 90, 200))],
    )
}
