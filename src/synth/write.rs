//! File-system side of the generator: deterministic PNG encoding and the guard that only lets it
//! write into an empty folder or over a tree it wrote before.

use crate::synth::{SynthError, MARKER};
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{ExtendedColorType, ImageEncoder};
use std::fs;
use std::io;
use std::path::Path;

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SynthError + '_ {
    move |cause| SynthError::Io {
        path: path.to_path_buf(),
        cause,
    }
}

/// Creates `dir` and its parents.
pub fn create_dir(dir: &Path) -> Result<(), SynthError> {
    fs::create_dir_all(dir).map_err(io_err(dir))
}

/// Encodes with fixed settings (fast deflate, adaptive filter, no metadata), so the same pixels
/// always give the same bytes, and writes the file.
fn write_png(
    path: &Path,
    bytes: &[u8],
    width: usize,
    height: usize,
    color: ExtendedColorType,
) -> Result<(), SynthError> {
    let mut buf = Vec::new();
    PngEncoder::new_with_quality(&mut buf, CompressionType::Fast, FilterType::Adaptive)
        .write_image(bytes, width as u32, height as u32, color)
        .map_err(|cause| SynthError::Png {
            path: path.to_path_buf(),
            cause,
        })?;
    fs::write(path, buf).map_err(io_err(path))
}

/// Writes an 8-bit grayscale PNG.
pub fn write_l8(path: &Path, pixels: &[u8], width: usize, height: usize) -> Result<(), SynthError> {
    write_png(path, pixels, width, height, ExtendedColorType::L8)
}

/// Writes a 16-bit grayscale PNG.
pub fn write_l16(
    path: &Path,
    pixels: &[u16],
    width: usize,
    height: usize,
) -> Result<(), SynthError> {
    // `PngEncoder` takes 16-bit samples in native byte order.
    let bytes: Vec<u8> = pixels.iter().flat_map(|v| v.to_ne_bytes()).collect();
    write_png(path, &bytes, width, height, ExtendedColorType::L16)
}

/// Whether `name` is a patient folder name (`LIDC-IDRI-` and at least four digits).
pub fn is_patient_dir_name(name: &str) -> bool {
    name.strip_prefix("LIDC-IDRI-")
        .is_some_and(|d| d.len() >= 4 && d.bytes().all(|b| b.is_ascii_digit()))
}

/// Makes `out` ready for a fresh tree: creates it when missing, accepts it when empty, and when it
/// holds a previous synthetic tree (the [`MARKER`] file plus patient folders, nothing else),
/// removes that tree. Anything else is refused, so real data is never overwritten.
pub fn prepare_out(out: &Path) -> Result<(), SynthError> {
    match fs::metadata(out) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return create_dir(out),
        Err(e) => return Err(io_err(out)(e)),
        Ok(m) if !m.is_dir() => {
            return Err(SynthError::NotSynthTree {
                path: out.to_path_buf(),
                reason: "not a directory".into(),
            })
        }
        Ok(_) => {}
    }
    let mut entries = Vec::new();
    for entry in fs::read_dir(out).map_err(io_err(out))? {
        let entry = entry.map_err(io_err(out))?;
        entries.push((entry.file_name(), entry.path()));
    }
    if entries.is_empty() {
        return Ok(());
    }
    if !entries.iter().any(|(name, _)| name == MARKER) {
        return Err(SynthError::NotSynthTree {
            path: out.to_path_buf(),
            reason: format!("not empty and has no {MARKER} marker"),
        });
    }
    let mut patients = Vec::new();
    for (name, path) in &entries {
        if name == MARKER {
            continue;
        }
        let is_dir = fs::symlink_metadata(path).map_err(io_err(path))?.is_dir();
        match name.to_str() {
            Some(n) if is_dir && is_patient_dir_name(n) => patients.push(path),
            _ => {
                return Err(SynthError::NotSynthTree {
                    path: out.to_path_buf(),
                    reason: format!("unexpected entry {}", name.to_string_lossy()),
                })
            }
        }
    }
    for p in patients {
        fs::remove_dir_all(p).map_err(io_err(p))?;
    }
    let marker = out.join(MARKER);
    fs::remove_file(&marker).map_err(io_err(&marker))
}

/// Writes the marker file that identifies `out` as a synthetic tree.
pub fn write_marker(out: &Path, text: &str) -> Result<(), SynthError> {
    let path = out.join(MARKER);
    fs::write(&path, text).map_err(io_err(&path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patient_names() {
        assert!(is_patient_dir_name("LIDC-IDRI-0001"));
        assert!(is_patient_dir_name("LIDC-IDRI-10000"));
        assert!(!is_patient_dir_name("LIDC-IDRI-001"));
        assert!(!is_patient_dir_name("LIDC-IDRI-00a1"));
        assert!(!is_patient_dir_name("notes"));
    }

    #[test]
    fn png_bytes_are_deterministic_and_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.png"), dir.path().join("b.png"));
        let px: Vec<u16> = (0..12u16).map(|v| v * 300).collect();
        write_l16(&a, &px, 4, 3).unwrap();
        write_l16(&b, &px, 4, 3).unwrap();
        assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap());
        let img = image::open(&a).unwrap().into_luma16();
        assert_eq!(img.into_raw(), px);
    }
}
