//! Overlay images: a slice upscaled 4× (nearest neighbour) with its prediction coloured over
//! the gray image. Eval overlays colour the comparison with the truth (TP green, FN red,
//! FP yellow); predict overlays colour the prediction red.

use crate::atomic::write_atomic;
use crate::error::{Error, Result};
use image::{ImageFormat, RgbImage};
use std::path::Path;

/// Upscaling factor of every overlay.
pub const SCALE: usize = 4;
/// True positive.
pub const TP: [u8; 3] = [0, 255, 0];
/// False negative.
pub const FN: [u8; 3] = [255, 0, 0];
/// False positive.
pub const FP: [u8; 3] = [255, 255, 0];
/// A predicted pixel in a predict overlay.
pub const PREDICTED: [u8; 3] = [255, 0, 0];

/// An intensity in [0,1] as an 8-bit gray value (clamped, rounded).
pub fn gray(v: f32) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0).round() as u8
}

/// Renders `height` x `width` pixels, each `SCALE`× larger, with `colour(i)` choosing the
/// colour of pixel `i`.
fn render(height: usize, width: usize, colour: impl Fn(usize) -> [u8; 3]) -> RgbImage {
    let (oh, ow) = ((height * SCALE) as u32, (width * SCALE) as u32);
    RgbImage::from_fn(ow, oh, |x, y| {
        let i = (y as usize / SCALE) * width + x as usize / SCALE;
        image::Rgb(colour(i))
    })
}

/// The eval overlay of one slice: TP green, FN red, FP yellow, other pixels gray from `image`.
///
/// # Panics
/// When the planes are not `height * width`.
pub fn eval_overlay(
    image: &[f32],
    truth: &[u8],
    pred: &[bool],
    height: usize,
    width: usize,
) -> RgbImage {
    let n = height * width;
    assert!(
        image.len() == n && truth.len() == n && pred.len() == n,
        "plane sizes"
    );
    render(height, width, |i| match (pred[i], truth[i] != 0) {
        (true, true) => TP,
        (false, true) => FN,
        (true, false) => FP,
        (false, false) => [gray(image[i]); 3],
    })
}

/// The predict overlay: predicted pixels red, others gray from `image`.
///
/// # Panics
/// When the planes are not `height * width`.
pub fn prediction_overlay(image: &[f32], pred: &[bool], height: usize, width: usize) -> RgbImage {
    let n = height * width;
    assert!(image.len() == n && pred.len() == n, "plane sizes");
    render(height, width, |i| {
        if pred[i] {
            PREDICTED
        } else {
            [gray(image[i]); 3]
        }
    })
}

/// `<slice_id with / replaced by __>_dice-0.123.png`.
pub fn overlay_name(slice_id: &str, dice: f64) -> String {
    format!("{}_dice-{dice:.3}.png", slice_id.replace('/', "__"))
}

/// Encodes any image buffer as PNG bytes.
pub fn png_bytes(img: &image::DynamicImage, path: &Path) -> Result<Vec<u8>> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png)
        .map_err(|e| Error::io(path, std::io::Error::other(e.to_string())))?;
    Ok(out.into_inner())
}

/// Writes `img` as a PNG at `path`, atomically.
pub fn save_png(img: image::DynamicImage, path: &Path) -> Result<()> {
    write_atomic(path, &png_bytes(&img, path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eval_overlay_colours_a_known_two_by_two_case() {
        // pixel 0: TP, 1: FN, 2: FP, 3: background with intensity 0.5.
        let image = [0.1, 0.2, 0.3, 0.5];
        let truth = [1, 1, 0, 0];
        let pred = [true, false, true, false];
        let img = eval_overlay(&image, &truth, &pred, 2, 2);
        assert_eq!(img.dimensions(), (8, 8));
        for (x, y, want) in [
            (0, 0, TP),
            (3, 3, TP),
            (4, 0, FN),
            (7, 3, FN),
            (0, 4, FP),
            (3, 7, FP),
            (4, 4, [128; 3]),
            (7, 7, [128; 3]),
        ] {
            assert_eq!(img.get_pixel(x, y).0, want, "pixel ({x}, {y})");
        }
    }

    #[test]
    fn prediction_overlay_is_red_over_gray() {
        let img = prediction_overlay(&[0.0, 1.0, 2.0], &[false, true, false], 1, 3);
        assert_eq!(img.dimensions(), (12, 4));
        assert_eq!(img.get_pixel(0, 0).0, [0; 3]);
        assert_eq!(img.get_pixel(5, 3).0, PREDICTED);
        assert_eq!(img.get_pixel(11, 0).0, [255; 3], "intensities are clamped");
    }

    #[test]
    fn names_flatten_the_slice_id() {
        assert_eq!(
            overlay_name("LIDC-0001/Nodule 1/slice-3", 0.12345),
            "LIDC-0001__Nodule 1__slice-3_dice-0.123.png"
        );
    }
}
