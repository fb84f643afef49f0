//! A walk over the element headers of a DICOM part-10 file held in memory, before the parser
//! sees it: the parser reserves whatever length an element declares, so a 300-byte file declaring
//! a 4 GiB element would be a 4 GiB allocation. The walk allocates nothing, refuses any declared
//! length beyond the end of the file, reads the transfer syntax (refusing compressed ones before
//! anything is parsed) and finds where the pixel data starts.

/// The 128-byte preamble and the `DICM` magic.
const PREAMBLE: usize = 128;
/// An undefined length (sequences and items of unknown size).
const UNDEFINED: u32 = 0xFFFF_FFFF;

/// What the walk found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Walk {
    /// The transfer syntax UID of the file meta information, trimmed.
    pub transfer_syntax: String,
    /// Whether the data set is explicit VR.
    pub explicit: bool,
    /// Offset of the pixel data element, when it lies in the bytes walked.
    pub pixel_data_at: Option<usize>,
}

/// Why a walk failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalkError {
    /// No `DICM` magic at byte 128.
    NoMagic,
    /// A transfer syntax other than implicit or explicit VR little endian.
    TransferSyntax(String),
    /// An element declares more bytes than the file has.
    Overlong(String),
}

/// Explicit VRs with a 4-byte length after 2 reserved bytes.
fn long_vr(vr: &[u8]) -> bool {
    matches!(
        vr,
        b"OB"
            | b"OD"
            | b"OF"
            | b"OL"
            | b"OV"
            | b"OW"
            | b"SQ"
            | b"UC"
            | b"UN"
            | b"UR"
            | b"UT"
            | b"SV"
            | b"UV"
    )
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Walks `bytes`, the first bytes of a file of `file_len` bytes (all of it, or a prefix), up to
/// the pixel data. `supported` says which transfer syntaxes go on to the data set, and whether
/// each is explicit VR.
pub fn walk(
    bytes: &[u8],
    file_len: u64,
    supported: impl Fn(&str) -> Option<bool>,
) -> Result<Walk, WalkError> {
    if bytes.get(PREAMBLE..PREAMBLE + 4) != Some(b"DICM") {
        return Err(WalkError::NoMagic);
    }
    let room = |pos: usize, header: usize| file_len.saturating_sub((pos + header) as u64);
    let overlong = |group: u16, element: u16, length: u32, room: u64| {
        WalkError::Overlong(format!(
            "element ({group:04X},{element:04X}) declares {length} bytes; only {room} follow in the file"
        ))
    };
    // The file meta group: always explicit VR little endian.
    let mut pos = PREAMBLE + 4;
    let mut syntax = String::new();
    while u16_at(bytes, pos) == Some(0x0002) {
        let element = u16_at(bytes, pos + 2).unwrap_or(0);
        let vr = bytes.get(pos + 4..pos + 6).unwrap_or(b"  ");
        let (header, length) = if long_vr(vr) {
            (12, u32_at(bytes, pos + 8).unwrap_or(0))
        } else {
            (8, u32::from(u16_at(bytes, pos + 6).unwrap_or(0)))
        };
        if u64::from(length) > room(pos, header) {
            return Err(overlong(2, element, length, room(pos, header)));
        }
        let value = pos + header..pos + header + length as usize;
        if element == 0x0010 {
            let text = bytes.get(value.clone()).unwrap_or_default();
            syntax = String::from_utf8_lossy(text)
                .trim_matches(|c: char| c.is_whitespace() || c == '\0')
                .to_string();
        }
        pos = value.end;
    }
    let Some(explicit) = supported(&syntax) else {
        return Err(WalkError::TransferSyntax(syntax));
    };
    let mut walk = Walk {
        transfer_syntax: syntax,
        explicit,
        pixel_data_at: None,
    };
    while pos + 8 <= bytes.len() {
        let (group, element) = (
            u16_at(bytes, pos).unwrap_or(0),
            u16_at(bytes, pos + 2).unwrap_or(0),
        );
        if group == 0xFFFE {
            // Items and delimiters: an item's contents are elements, walked in place.
            let length = u32_at(bytes, pos + 4).unwrap_or(0);
            if element == 0xE000 && length != UNDEFINED && u64::from(length) > room(pos, 8) {
                return Err(overlong(group, element, length, room(pos, 8)));
            }
            pos += 8;
            continue;
        }
        let vr = bytes.get(pos + 4..pos + 6).unwrap_or(b"  ");
        let (header, length, sequence) = if !explicit {
            (8, u32_at(bytes, pos + 4).unwrap_or(0), false)
        } else if long_vr(vr) {
            (12, u32_at(bytes, pos + 8).unwrap_or(0), vr == b"SQ")
        } else {
            (8, u32::from(u16_at(bytes, pos + 6).unwrap_or(0)), false)
        };
        if length != UNDEFINED && u64::from(length) > room(pos, header) {
            return Err(overlong(group, element, length, room(pos, header)));
        }
        if (group, element) == (0x7FE0, 0x0010) {
            walk.pixel_data_at = Some(pos);
            return Ok(walk);
        }
        pos += header;
        if length != UNDEFINED && !sequence {
            pos += length as usize;
        }
    }
    Ok(walk)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A part-10 file: preamble, magic, a transfer syntax element, then `body`.
    fn file(syntax: &str, body: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 128];
        b.extend_from_slice(b"DICM");
        let mut uid = syntax.as_bytes().to_vec();
        if uid.len() % 2 == 1 {
            uid.push(0);
        }
        b.extend_from_slice(&[0x02, 0x00, 0x10, 0x00, b'U', b'I']);
        b.extend_from_slice(&(uid.len() as u16).to_le_bytes());
        b.extend_from_slice(&uid);
        b.extend_from_slice(body);
        b
    }

    fn explicit(syntax: &str) -> Option<bool> {
        match syntax {
            "1.2.840.10008.1.2.1" => Some(true),
            "1.2.840.10008.1.2" => Some(false),
            _ => None,
        }
    }

    #[test]
    fn finds_the_pixel_data_and_refuses_lengths_beyond_the_file() {
        // (0028,0010) US 2 bytes, then (7FE0,0010) OW of 4 bytes.
        let mut body = vec![0x28, 0x00, 0x10, 0x00, b'U', b'S', 2, 0, 0x80, 0x00];
        body.extend_from_slice(&[
            0xE0, 0x7F, 0x10, 0x00, b'O', b'W', 0, 0, 4, 0, 0, 0, 1, 2, 3, 4,
        ]);
        let ok = file("1.2.840.10008.1.2.1", &body);
        let w = walk(&ok, ok.len() as u64, explicit).unwrap();
        assert_eq!(w.pixel_data_at, Some(ok.len() - 16));
        assert!(w.explicit);
        // The same element declaring 4 GiB in a file of a few hundred bytes.
        let mut bomb = vec![0x09, 0x00, 0x10, 0x00, b'O', b'B', 0, 0];
        bomb.extend_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
        let bad = file("1.2.840.10008.1.2.1", &bomb);
        assert!(matches!(
            walk(&bad, bad.len() as u64, explicit),
            Err(WalkError::Overlong(_))
        ));
        // A prefix of a longer file: lengths are judged against the whole file.
        assert!(walk(&bad, 1 << 33, explicit).is_ok());
    }

    #[test]
    fn compressed_syntaxes_and_files_without_magic_are_refused_before_parsing() {
        let j2k = file("1.2.840.10008.1.2.4.91", &[]);
        assert_eq!(
            walk(&j2k, j2k.len() as u64, explicit),
            Err(WalkError::TransferSyntax("1.2.840.10008.1.2.4.91".into()))
        );
        assert_eq!(walk(b"not dicom", 9, explicit), Err(WalkError::NoMagic));
        // Implicit VR: a 4-byte length right after the tag.
        let mut body = vec![0x28, 0x00, 0x10, 0x00, 2, 0, 0, 0, 0x80, 0x00];
        body.extend_from_slice(&[0xE0, 0x7F, 0x10, 0x00, 0xF0, 0xFF, 0xFF, 0x7F]);
        let imp = file("1.2.840.10008.1.2", &body);
        assert!(matches!(
            walk(&imp, imp.len() as u64, explicit),
            Err(WalkError::Overlong(_))
        ));
    }
}
