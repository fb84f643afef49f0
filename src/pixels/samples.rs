//! Decoded gray planes as the decoders hand them out: 8- or 16-bit samples borrowed from the
//! decoder's reused buffers.

/// A decoded plane's samples, borrowed from the decoder scratch that decoded them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraySamples<'a> {
    /// From an 8-bit PNG.
    Eight(&'a [u8]),
    /// From a 16-bit PNG.
    Sixteen(&'a [u16]),
}

/// A decoded grayscale plane that borrows its samples from the decoder's buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrayView<'a> {
    /// Height in pixels.
    pub height: usize,
    /// Width in pixels.
    pub width: usize,
    /// Row-major samples.
    pub samples: GraySamples<'a>,
    /// The source had colour channels and was converted to gray.
    pub was_colour: bool,
}

impl GrayView<'_> {
    /// 8 or 16.
    pub fn bits(&self) -> u8 {
        match self.samples {
            GraySamples::Eight(_) => 8,
            GraySamples::Sixteen(_) => 16,
        }
    }
}
