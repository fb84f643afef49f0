//! Decodes a PNG into one grayscale plane the way OpenCV's `IMREAD_GRAYSCALE` reads it, keeping
//! 16-bit samples (which hold HU + offset) at full depth.

use image::{DynamicImage, ImageFormat};

/// A decoded grayscale plane.
#[derive(Debug, Clone, PartialEq)]
pub struct GrayPlane {
    /// Height in pixels.
    pub height: usize,
    /// Width in pixels.
    pub width: usize,
    /// 8 or 16.
    pub bits: u8,
    /// Row-major samples (0..=255 for 8-bit, 0..=65535 for 16-bit).
    pub samples: Vec<u16>,
    /// The source had colour channels and was converted to gray.
    pub was_colour: bool,
}

/// Why a PNG could not be turned into a plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeFailure {
    /// Not a decodable PNG.
    Corrupt(String),
    /// A pixel format with no grayscale reading (floating point).
    Unsupported(String),
    /// Zero width or height.
    Empty,
}

/// libpng's fixed-point RGB→gray weights, as OpenCV sets them with
/// `png_set_rgb_to_gray(png, 1, 0.299, 0.587)`: 0.299·32768 and 0.587·32768, truncated, and blue
/// takes the remainder of 32768.
const RED: u32 = 9797;
const GREEN: u32 = 19234;
const BLUE: u32 = 32768 - RED - GREEN;

/// libpng's 8-bit RGB→gray: equal channels pass through, others are weighted and truncated.
pub fn gray_from_rgb8(r: u8, g: u8, b: u8) -> u8 {
    if r == g && g == b {
        return r;
    }
    ((RED * u32::from(r) + GREEN * u32::from(g) + BLUE * u32::from(b)) >> 15) as u8
}

/// libpng's 16-bit RGB→gray (rounded).
pub fn gray_from_rgb16(r: u16, g: u16, b: u16) -> u16 {
    if r == g && g == b {
        return r;
    }
    let sum = u64::from(RED) * u64::from(r)
        + u64::from(GREEN) * u64::from(g)
        + u64::from(BLUE) * u64::from(b);
    ((sum + 16384) >> 15).min(u64::from(u16::MAX)) as u16
}

/// Decodes PNG bytes into a grayscale plane. Alpha is dropped, as OpenCV does.
pub fn decode_png(bytes: &[u8]) -> Result<GrayPlane, DecodeFailure> {
    let img = image::load_from_memory_with_format(bytes, ImageFormat::Png)
        .map_err(|e| DecodeFailure::Corrupt(e.to_string()))?;
    let (width, height) = (img.width() as usize, img.height() as usize);
    if width == 0 || height == 0 {
        return Err(DecodeFailure::Empty);
    }
    let (bits, samples, was_colour): (u8, Vec<u16>, bool) = match img {
        DynamicImage::ImageLuma8(b) => {
            (8, b.into_raw().into_iter().map(u16::from).collect(), false)
        }
        DynamicImage::ImageLumaA8(b) => (8, b.pixels().map(|p| u16::from(p.0[0])).collect(), false),
        DynamicImage::ImageRgb8(b) => (
            8,
            b.pixels()
                .map(|p| u16::from(gray_from_rgb8(p.0[0], p.0[1], p.0[2])))
                .collect(),
            true,
        ),
        DynamicImage::ImageRgba8(b) => (
            8,
            b.pixels()
                .map(|p| u16::from(gray_from_rgb8(p.0[0], p.0[1], p.0[2])))
                .collect(),
            true,
        ),
        DynamicImage::ImageLuma16(b) => (16, b.into_raw(), false),
        DynamicImage::ImageLumaA16(b) => (16, b.pixels().map(|p| p.0[0]).collect(), false),
        DynamicImage::ImageRgb16(b) => (
            16,
            b.pixels()
                .map(|p| gray_from_rgb16(p.0[0], p.0[1], p.0[2]))
                .collect(),
            true,
        ),
        DynamicImage::ImageRgba16(b) => (
            16,
            b.pixels()
                .map(|p| gray_from_rgb16(p.0[0], p.0[1], p.0[2]))
                .collect(),
            true,
        ),
        other => {
            return Err(DecodeFailure::Unsupported(format!(
                "pixel format {:?} has no grayscale reading",
                other.color()
            )))
        }
    };
    Ok(GrayPlane {
        height,
        width,
        bits,
        samples,
        was_colour,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(img: DynamicImage) -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn libpng_gray_weights_by_hand() {
        // (9797*200 + 19234*100 + 3737*50) >> 15 = (1959400 + 1923400 + 186850) >> 15
        //   = 4069650 >> 15 = 124
        assert_eq!(gray_from_rgb8(200, 100, 50), 124);
        assert_eq!(gray_from_rgb8(77, 77, 77), 77);
        // A pure dim blue is 0 in OpenCV's reading: (3737*1) >> 15 = 0.
        assert_eq!(gray_from_rgb8(0, 0, 1), 0);
        assert_eq!(gray_from_rgb8(255, 255, 254), 254);
    }

    #[test]
    fn decodes_gray_colour_and_16_bit() {
        let g = image::GrayImage::from_raw(2, 1, vec![0, 255]).unwrap();
        let p = decode_png(&png(DynamicImage::ImageLuma8(g))).unwrap();
        assert_eq!((p.height, p.width, p.bits, p.was_colour), (1, 2, 8, false));
        assert_eq!(p.samples, vec![0, 255]);

        let c = image::RgbaImage::from_raw(1, 1, vec![200, 100, 50, 7]).unwrap();
        let p = decode_png(&png(DynamicImage::ImageRgba8(c))).unwrap();
        assert_eq!((p.samples[0], p.was_colour), (124, true));

        let h =
            image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::from_raw(1, 1, vec![1024]).unwrap();
        let p = decode_png(&png(DynamicImage::ImageLuma16(h))).unwrap();
        assert_eq!((p.bits, p.samples[0]), (16, 1024));
    }

    #[test]
    fn garbage_and_truncated_bytes_are_corrupt() {
        assert!(matches!(
            decode_png(b"not a png"),
            Err(DecodeFailure::Corrupt(_))
        ));
        let g = image::GrayImage::from_raw(8, 8, vec![9; 64]).unwrap();
        let bytes = png(DynamicImage::ImageLuma8(g));
        let cut = &bytes[..bytes.len() / 2];
        assert!(matches!(decode_png(cut), Err(DecodeFailure::Corrupt(_))));
    }
}
