//! Decodes a PNG into one grayscale plane the way OpenCV's `IMREAD_GRAYSCALE` reads it, keeping
//! 16-bit samples (which hold HU + offset) at full depth.

use crate::pixels::gray_png::GrayPngScratch;
use crate::pixels::limits::{
    declared_size, too_large_message, too_many_pixels, DEFAULT_MAX_PIXELS,
};
use crate::pixels::samples::{GraySamples, GrayView};

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
    /// The header declares more pixels than the cap; nothing was allocated for them.
    TooLarge {
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
        /// The cap.
        max_pixels: u64,
    },
}

impl DecodeFailure {
    /// Why the file is unusable, in words.
    pub fn message(&self) -> String {
        match self {
            DecodeFailure::Corrupt(m) => format!("not a readable PNG: {m}"),
            DecodeFailure::Unsupported(m) => m.clone(),
            DecodeFailure::Empty => "zero width or height".into(),
            DecodeFailure::TooLarge {
                width,
                height,
                max_pixels,
            } => too_large_message(u64::from(*width), u64::from(*height), *max_pixels),
        }
    }

    /// `Err(TooLarge)` when `width x height` is over `max_pixels`.
    fn check_size(width: u32, height: u32, max_pixels: u64) -> Result<(), Self> {
        if too_many_pixels(u64::from(width), u64::from(height), max_pixels) {
            return Err(DecodeFailure::TooLarge {
                width,
                height,
                max_pixels,
            });
        }
        Ok(())
    }
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

/// Decodes PNG bytes into a grayscale plane, refusing images over `max_pixels`. Alpha is
/// dropped, as OpenCV does.
pub fn decode_png(bytes: &[u8], max_pixels: u64) -> Result<GrayPlane, DecodeFailure> {
    let mut scratch = PngScratch::new(max_pixels);
    let view = scratch.decode(bytes)?;
    Ok(GrayPlane {
        height: view.height,
        width: view.width,
        bits: view.bits(),
        samples: match view.samples {
            GraySamples::Eight(v) => v.iter().map(|&s| u16::from(s)).collect(),
            GraySamples::Sixteen(v) => v.to_vec(),
        },
        was_colour: view.was_colour,
    })
}

/// Decoder buffers reused across files, so that decoding a slice allocates nothing once they
/// have grown: one per worker thread. Files whose header declares more than `max_pixels` are
/// refused before either decoder allocates anything for them.
#[derive(Debug)]
pub struct PngScratch {
    /// The PNG's decoded output, before any gray conversion.
    raw: Vec<u8>,
    /// Gray samples converted from colour or alpha 8-bit output.
    gray8: Vec<u8>,
    /// Gray samples of 16-bit output, in native byte order.
    gray16: Vec<u16>,
    /// The one-shot path for plain gray PNGs, tried first.
    gray: GrayPngScratch,
    /// The cap on declared width x height.
    max_pixels: u64,
}

impl Default for PngScratch {
    /// A scratch with the default cap, [`DEFAULT_MAX_PIXELS`].
    fn default() -> Self {
        Self::new(DEFAULT_MAX_PIXELS)
    }
}

/// The most bytes the `png` crate may allocate for itself (chunk data, line buffers): its own
/// default. The frame buffer is ours and bounded by the pixel cap.
const PNG_CRATE_BYTES: usize = 64 << 20;

impl PngScratch {
    /// Empty buffers and a cap of `max_pixels` pixels a file.
    pub fn new(max_pixels: u64) -> Self {
        Self {
            raw: Vec::new(),
            gray8: Vec::new(),
            gray16: Vec::new(),
            gray: GrayPngScratch::default(),
            max_pixels,
        }
    }

    /// Decodes a clean 8- or 16-bit gray PNG under the cap in one shot (see
    /// [`GrayPngScratch::decode`]) and returns its (height, width); `None` sends the file to
    /// [`PngScratch::decode`].
    pub fn decode_plain_gray(&mut self, bytes: &[u8]) -> Option<(usize, usize)> {
        self.gray.decode(bytes, self.max_pixels)
    }

    /// The plane [`PngScratch::decode_plain_gray`] accepted last.
    pub fn plain_gray_view(&self, height: usize, width: usize) -> GrayView<'_> {
        GrayView {
            height,
            width,
            samples: self.gray.samples(),
            was_colour: false,
        }
    }

    /// Decodes `bytes` into this scratch's buffers and returns a view of the gray plane.
    ///
    /// This reads exactly what `image::load_from_memory` reads (the `png` crate with its
    /// `EXPAND` transformation: palettes become RGB(A), gray below 8 bits is scaled to 8 bits,
    /// tRNS becomes alpha), without the intermediate `DynamicImage`. Plain 8- and 16-bit gray
    /// files, the common case, go through the one-shot decoder in `gray_png` first, which
    /// answers only for files it reads completely and identically.
    pub fn decode(&mut self, bytes: &[u8]) -> Result<GrayView<'_>, DecodeFailure> {
        // The header is checked before either decoder sees the file: the png crate sizes line
        // buffers from it while reading the header, and our frame buffer after.
        if let Some((width, height)) = declared_size(bytes) {
            DecodeFailure::check_size(width, height, self.max_pixels)?;
        }
        if let Some((height, width)) = self.decode_plain_gray(bytes) {
            return Ok(self.plain_gray_view(height, width));
        }
        let corrupt = |e: png::DecodingError| DecodeFailure::Corrupt(e.to_string());
        let mut decoder = png::Decoder::new_with_limits(
            std::io::Cursor::new(bytes),
            png::Limits {
                bytes: PNG_CRATE_BYTES,
            },
        );
        decoder.set_transformations(png::Transformations::EXPAND);
        let mut reader = decoder.read_info().map_err(corrupt)?;
        let info = reader.info();
        DecodeFailure::check_size(info.width, info.height, self.max_pixels)?;
        let (width, height) = (info.width as usize, info.height as usize);
        if width == 0 || height == 0 {
            return Err(DecodeFailure::Empty);
        }
        let (colour, depth) = reader.output_color_type();
        let size = reader.output_buffer_size().ok_or_else(|| {
            DecodeFailure::Unsupported(format!("{width}x{height} is too large to decode"))
        })?;
        // next_frame overwrites all `size` bytes, so a buffer that is already long enough is
        // only shortened, not zeroed again.
        if self.raw.len() < size {
            self.raw.resize(size, 0);
        }
        self.raw.truncate(size);
        reader.next_frame(&mut self.raw).map_err(corrupt)?;
        let channels = match colour {
            png::ColorType::Grayscale => 1,
            png::ColorType::GrayscaleAlpha => 2,
            png::ColorType::Rgb => 3,
            png::ColorType::Rgba => 4,
            png::ColorType::Indexed => {
                return Err(DecodeFailure::Unsupported(
                    "indexed colour was not expanded".into(),
                ))
            }
        };
        let sixteen = match depth {
            png::BitDepth::Eight => false,
            png::BitDepth::Sixteen => true,
            other => {
                return Err(DecodeFailure::Unsupported(format!(
                    "{colour:?} at {} bits per sample has no grayscale reading",
                    other as u8
                )))
            }
        };
        let n = width * height;
        let bytes_per_pixel = channels * if sixteen { 2 } else { 1 };
        let raw = self.raw.get(..n * bytes_per_pixel).ok_or_else(|| {
            DecodeFailure::Corrupt("decoded frame is shorter than its header says".into())
        })?;
        let be16 = |p: &[u8], i: usize| u16::from_be_bytes([p[2 * i], p[2 * i + 1]]);
        let samples = match (channels, sixteen) {
            (1, false) => GraySamples::Eight(raw),
            (2, false) => {
                self.gray8.clear();
                self.gray8.extend(raw.chunks_exact(2).map(|p| p[0]));
                GraySamples::Eight(&self.gray8)
            }
            (_, false) => {
                self.gray8.clear();
                self.gray8.extend(
                    raw.chunks_exact(channels)
                        .map(|p| gray_from_rgb8(p[0], p[1], p[2])),
                );
                GraySamples::Eight(&self.gray8)
            }
            (1 | 2, true) => {
                self.gray16.clear();
                self.gray16
                    .extend(raw.chunks_exact(2 * channels).map(|p| be16(p, 0)));
                GraySamples::Sixteen(&self.gray16)
            }
            (_, true) => {
                self.gray16.clear();
                self.gray16.extend(
                    raw.chunks_exact(2 * channels)
                        .map(|p| gray_from_rgb16(be16(p, 0), be16(p, 1), be16(p, 2))),
                );
                GraySamples::Sixteen(&self.gray16)
            }
        };
        Ok(GrayView {
            height,
            width,
            samples,
            was_colour: channels >= 3,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{DynamicImage, ImageFormat};

    /// The reading `decode_png` must reproduce: the `image` crate's decoder, then OpenCV's gray
    /// conversion per pixel format (the implementation before the direct `png` decoder).
    fn reference(bytes: &[u8]) -> (usize, usize, u8, Vec<u16>, bool) {
        let img = image::load_from_memory_with_format(bytes, ImageFormat::Png).unwrap();
        let (w, h) = (img.width() as usize, img.height() as usize);
        let (bits, samples, colour) = match img {
            DynamicImage::ImageLuma8(b) => {
                (8, b.pixels().map(|p| u16::from(p.0[0])).collect(), false)
            }
            DynamicImage::ImageLumaA8(b) => {
                (8, b.pixels().map(|p| u16::from(p.0[0])).collect(), false)
            }
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
            DynamicImage::ImageLuma16(b) => (16, b.pixels().map(|p| p.0[0]).collect(), false),
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
            other => panic!("unexpected {:?}", other.color()),
        };
        (h, w, bits, samples, colour)
    }

    /// A PNG written by the `png` encoder directly, for formats `image` cannot write.
    fn raw_png(
        w: u32,
        h: u32,
        colour: png::ColorType,
        depth: png::BitDepth,
        palette: Option<Vec<u8>>,
        trns: Option<Vec<u8>>,
        data: &[u8],
    ) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut e = png::Encoder::new(&mut out, w, h);
            e.set_color(colour);
            e.set_depth(depth);
            if let Some(p) = palette {
                e.set_palette(p);
            }
            if let Some(t) = trns {
                e.set_trns(t);
            }
            let mut wr = e.write_header().unwrap();
            wr.write_image_data(data).unwrap();
        }
        out
    }

    #[test]
    fn direct_decoder_matches_the_image_crate_for_every_pixel_format() {
        let mut rng = crate::rng::SplitMix64::new(5);
        let mut bytes = |n: usize| -> Vec<u8> { (0..n).map(|_| rng.next_u64() as u8).collect() };
        let (w, h) = (7u32, 5u32);
        let n = (w * h) as usize;
        use png::{BitDepth, ColorType};
        // (name, colour, depth, bytes of image data) for the formats written without a palette.
        // 1-bit gray rows take ceil(7/8) = 1 byte (EXPAND scales 1 to 255); 4-bit rows 4 bytes.
        let plain = [
            (
                "gray-alpha8",
                ColorType::GrayscaleAlpha,
                BitDepth::Eight,
                2 * n,
            ),
            ("rgb8", ColorType::Rgb, BitDepth::Eight, 3 * n),
            ("rgba8", ColorType::Rgba, BitDepth::Eight, 4 * n),
            ("gray16", ColorType::Grayscale, BitDepth::Sixteen, 2 * n),
            (
                "gray-alpha16",
                ColorType::GrayscaleAlpha,
                BitDepth::Sixteen,
                4 * n,
            ),
            ("rgb16", ColorType::Rgb, BitDepth::Sixteen, 6 * n),
            ("rgba16", ColorType::Rgba, BitDepth::Sixteen, 8 * n),
            ("gray1", ColorType::Grayscale, BitDepth::One, h as usize),
            (
                "gray4",
                ColorType::Grayscale,
                BitDepth::Four,
                4 * h as usize,
            ),
        ];
        let mut cases: Vec<(&str, Vec<u8>)> = vec![(
            "gray8",
            png(DynamicImage::ImageLuma8(
                image::GrayImage::from_raw(w, h, bytes(n)).unwrap(),
            )),
        )];
        for (name, colour, depth, len) in plain {
            cases.push((name, raw_png(w, h, colour, depth, None, None, &bytes(len))));
        }
        // A 4-entry palette, 8-bit indices 0..3, and a tRNS chunk (becomes alpha, dropped).
        cases.push((
            "palette",
            raw_png(
                w,
                h,
                ColorType::Indexed,
                BitDepth::Eight,
                Some(vec![0, 0, 0, 200, 100, 50, 9, 9, 9, 255, 255, 254]),
                Some(vec![255, 128]),
                &bytes(n).iter().map(|b| b % 4).collect::<Vec<_>>(),
            ),
        ));
        // One scratch for every case, so that reused buffers are exercised too.
        let mut scratch = PngScratch::default();
        for (name, png_bytes) in &cases {
            let v = scratch.decode(png_bytes).unwrap();
            let samples: Vec<u16> = match v.samples {
                GraySamples::Eight(s) => s.iter().map(|&x| u16::from(x)).collect(),
                GraySamples::Sixteen(s) => s.to_vec(),
            };
            let got = (v.height, v.width, v.bits(), samples, v.was_colour);
            assert_eq!(got, reference(png_bytes), "{name}");
            assert_eq!(
                decode_png(png_bytes, DEFAULT_MAX_PIXELS).unwrap().samples,
                got.3,
                "{name}"
            );
        }
    }

    fn decode_png_default(bytes: &[u8]) -> Result<GrayPlane, DecodeFailure> {
        decode_png(bytes, DEFAULT_MAX_PIXELS)
    }

    /// A tiny PNG whose IHDR is rewritten to declare `width x height` (CRC fixed): the header of
    /// a decompression bomb, with image data for one pixel.
    fn bomb(colour: png::ColorType, depth: png::BitDepth, width: u32, height: u32) -> Vec<u8> {
        let bytes_per_pixel = colour.samples()
            * if depth == png::BitDepth::Sixteen {
                2
            } else {
                1
            };
        let mut b = raw_png(1, 1, colour, depth, None, None, &vec![0; bytes_per_pixel]);
        b[16..20].copy_from_slice(&width.to_be_bytes());
        b[20..24].copy_from_slice(&height.to_be_bytes());
        let crc = crc32fast::hash(&b[12..29]);
        b[29..33].copy_from_slice(&crc.to_be_bytes());
        b
    }

    #[test]
    fn bombs_are_refused_before_any_buffer_is_sized_for_them() {
        use png::{BitDepth, ColorType};
        for (colour, depth) in [
            (ColorType::Grayscale, BitDepth::Eight),
            (ColorType::Grayscale, BitDepth::Sixteen),
            (ColorType::Rgba, BitDepth::Eight),
            (ColorType::Rgba, BitDepth::Sixteen),
        ] {
            let b = bomb(colour, depth, 60000, 60000);
            assert!(b.len() < 400, "{}", b.len());
            let mut scratch = PngScratch::default();
            let err = scratch.decode(&b).unwrap_err();
            assert_eq!(
                err,
                DecodeFailure::TooLarge {
                    width: 60000,
                    height: 60000,
                    max_pixels: DEFAULT_MAX_PIXELS
                },
                "{colour:?} {depth:?}"
            );
            assert!(err.message().contains("60000x60000"), "{}", err.message());
            let sized =
                scratch.raw.capacity() + scratch.gray8.capacity() + scratch.gray16.capacity();
            assert_eq!(sized, 0, "{colour:?} {depth:?}");
        }
        // The cap is inclusive, on the png crate's path (RGB) and the one-shot path (gray).
        for colour in [png::ColorType::Rgb, png::ColorType::Grayscale] {
            let samples = colour.samples();
            let b = raw_png(
                7,
                5,
                colour,
                BitDepth::Eight,
                None,
                None,
                &vec![3; 35 * samples],
            );
            assert!(PngScratch::new(35).decode(&b).is_ok(), "{colour:?}");
            assert!(matches!(
                PngScratch::new(34).decode(&b),
                Err(DecodeFailure::TooLarge { .. })
            ));
        }
    }

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
        let p = decode_png_default(&png(DynamicImage::ImageLuma8(g))).unwrap();
        assert_eq!((p.height, p.width, p.bits, p.was_colour), (1, 2, 8, false));
        assert_eq!(p.samples, vec![0, 255]);

        let c = image::RgbaImage::from_raw(1, 1, vec![200, 100, 50, 7]).unwrap();
        let p = decode_png_default(&png(DynamicImage::ImageRgba8(c))).unwrap();
        assert_eq!((p.samples[0], p.was_colour), (124, true));

        let h =
            image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::from_raw(1, 1, vec![1024]).unwrap();
        let p = decode_png_default(&png(DynamicImage::ImageLuma16(h))).unwrap();
        assert_eq!((p.bits, p.samples[0]), (16, 1024));
    }

    #[test]
    fn garbage_and_truncated_bytes_are_corrupt() {
        assert!(matches!(
            decode_png_default(b"not a png"),
            Err(DecodeFailure::Corrupt(_))
        ));
        let g = image::GrayImage::from_raw(8, 8, vec![9; 64]).unwrap();
        let bytes = png(DynamicImage::ImageLuma8(g));
        let cut = &bytes[..bytes.len() / 2];
        assert!(matches!(
            decode_png_default(cut),
            Err(DecodeFailure::Corrupt(_))
        ));
    }
}
