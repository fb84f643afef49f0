//! Image files to gray sample planes and intensities in [0, 1]: the PNG decoders and the intensity
//! rules, shared by `prepare` and `predict`.

pub mod decode;
pub mod gray_png;
pub mod intensity;
pub mod samples;
