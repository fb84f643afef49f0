//! The caps on what one input image may declare and weigh, checked before anything is allocated
//! for it: a 312-byte PNG can declare 60000x60000 pixels, and a "slice" can be a link to
//! `/dev/zero`. `prepare` and `predict` share them (`--max-pixels`).

/// The default cap on a PNG's declared width x height: 16 Mpx (4096x4096), 64 times a 512x512
/// CT slice.
pub const DEFAULT_MAX_PIXELS: u64 = 4096 * 4096;

/// PNG files start with these 8 bytes.
pub const PNG_SIGNATURE: &[u8; 8] = b"\x89PNG\r\n\x1a\n";

/// The (width, height) a PNG declares in its IHDR chunk, read from its first 24 bytes without
/// decoding anything; `None` when the bytes do not start with a PNG signature and an IHDR.
pub fn declared_size(bytes: &[u8]) -> Option<(u32, u32)> {
    let header = bytes.get(..24)?;
    if &header[..8] != PNG_SIGNATURE || &header[12..16] != b"IHDR" {
        return None;
    }
    let be32 = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    Some((be32(&header[16..20]), be32(&header[20..24])))
}

/// Whether `width x height` pixels exceed `max_pixels`.
pub fn too_many_pixels(width: u64, height: u64, max_pixels: u64) -> bool {
    width.saturating_mul(height) > max_pixels
}

/// The message for an image over the cap, for rejects and per-file failures.
pub fn too_large_message(width: u64, height: u64, max_pixels: u64) -> String {
    format!(
        "declares {width}x{height} = {} pixels, over the cap of {max_pixels} (--max-pixels); not decoded",
        width.saturating_mul(height)
    )
}

/// The largest input file read for a cap of `max_pixels`: an image at the cap stored without
/// compression at 8 bytes a pixel (RGBA, 16 bits), plus a filter byte a row, zlib's framing
/// and 1 MiB of other chunks. Reading stops there, so a link to `/dev/zero` costs at most this.
pub fn max_file_bytes(max_pixels: u64) -> u64 {
    max_pixels.saturating_mul(9).saturating_add(1 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_declared_size_from_the_header_only() {
        let mut header = PNG_SIGNATURE.to_vec();
        header.extend_from_slice(&13u32.to_be_bytes());
        header.extend_from_slice(b"IHDR");
        header.extend_from_slice(&60000u32.to_be_bytes());
        header.extend_from_slice(&7u32.to_be_bytes());
        assert_eq!(declared_size(&header), Some((60000, 7)));
        assert_eq!(declared_size(&header[..23]), None);
        assert_eq!(declared_size(b"GIF89a and some more bytes here"), None);
        assert!(too_many_pixels(4097, 4096, DEFAULT_MAX_PIXELS));
        assert!(!too_many_pixels(4096, 4096, DEFAULT_MAX_PIXELS));
        assert!(too_many_pixels(u64::MAX, 2, u64::MAX - 1), "saturates");
        assert_eq!(max_file_bytes(0), 1 << 20);
    }
}
