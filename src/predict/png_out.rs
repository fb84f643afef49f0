//! Writes predict's output PNGs one row at a time, so that the mask, the overlay (4x the slice on
//! each side) and the probability map of a large slice never exist whole in memory.

use crate::atomic::commit;
use crate::error::{Error, IoContext, Result};
use crate::layout::temporary_name;
use std::io::{BufWriter, Write};
use std::path::Path;

/// The pixel format of an output.
#[derive(Debug, Clone, Copy)]
pub enum RowFormat {
    /// 8-bit gray.
    Gray8,
    /// 16-bit gray, big-endian in the row bytes.
    Gray16,
    /// 8-bit RGB.
    Rgb8,
}

impl RowFormat {
    fn bytes_per_pixel(self) -> usize {
        match self {
            RowFormat::Gray8 => 1,
            RowFormat::Gray16 => 2,
            RowFormat::Rgb8 => 3,
        }
    }

    fn png(self) -> (png::ColorType, png::BitDepth) {
        match self {
            RowFormat::Gray8 => (png::ColorType::Grayscale, png::BitDepth::Eight),
            RowFormat::Gray16 => (png::ColorType::Grayscale, png::BitDepth::Sixteen),
            RowFormat::Rgb8 => (png::ColorType::Rgb, png::BitDepth::Eight),
        }
    }
}

/// Writes a `width`x`height` PNG at `path` whose row `y` is filled by `fill_row(y, row)`, through
/// a temporary name and a rename; the temporary is removed if anything fails.
pub fn write_png_rows(
    path: &Path,
    (width, height): (usize, usize),
    format: RowFormat,
    fill_row: impl FnMut(usize, &mut [u8]),
) -> Result<()> {
    let tmp = temporary_name(path);
    let written = encode(&tmp, (width, height), format, fill_row);
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return written;
    }
    commit(&tmp, path)
}

fn encode(
    tmp: &Path,
    (width, height): (usize, usize),
    format: RowFormat,
    mut fill_row: impl FnMut(usize, &mut [u8]),
) -> Result<()> {
    let too_big = || Error::input(tmp, format!("{width}x{height} is too large for a PNG"));
    let (w, h) = (
        u32::try_from(width).map_err(|_| too_big())?,
        u32::try_from(height).map_err(|_| too_big())?,
    );
    let file = std::fs::File::create(tmp).at(tmp)?;
    let png_error = |e: png::EncodingError| Error::io(tmp, std::io::Error::other(e.to_string()));
    let mut encoder = png::Encoder::new(BufWriter::new(file), w, h);
    let (colour, depth) = format.png();
    encoder.set_color(colour);
    encoder.set_depth(depth);
    let mut writer = encoder.write_header().map_err(png_error)?;
    let mut stream = writer.stream_writer().map_err(png_error)?;
    let mut row = vec![0u8; width * format.bytes_per_pixel()];
    for y in 0..height {
        fill_row(y, &mut row);
        stream.write_all(&row).at(tmp)?;
    }
    stream.finish().map_err(png_error)?;
    writer.finish().map_err(png_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_make_the_png_they_describe() {
        let dir = tempfile::tempdir().unwrap();
        let gray = dir.path().join("g.png");
        write_png_rows(&gray, (3, 2), RowFormat::Gray8, |y, row| {
            row.copy_from_slice(&[y as u8, 7, 255]);
        })
        .unwrap();
        let img = image::open(&gray).unwrap().to_luma8();
        assert_eq!(img.into_raw(), vec![0, 7, 255, 1, 7, 255]);
        let wide = dir.path().join("w.png");
        write_png_rows(&wide, (1, 1), RowFormat::Gray16, |_, row| {
            row.copy_from_slice(&1024u16.to_be_bytes())
        })
        .unwrap();
        let img = image::open(&wide).unwrap();
        assert_eq!(img.as_luma16().unwrap().as_raw(), &vec![1024]);
        let rgb = dir.path().join("c.png");
        write_png_rows(&rgb, (1, 1), RowFormat::Rgb8, |_, row| {
            row.copy_from_slice(&[1, 2, 3])
        })
        .unwrap();
        assert_eq!(
            image::open(&rgb).unwrap().to_rgb8().into_raw(),
            vec![1, 2, 3]
        );
        assert!(!temporary_name(&rgb).exists());
    }
}
