//! The slice id `patient/nodule/stem`, the key that joins shards, manifest, indexes and eval
//! tables: built in one place (`prepare`'s tree walk) and parsed in one place.

use std::fmt;
use std::path::Path;

/// The parts of a slice id. Folder and file names cannot contain `/`, so the first two `/`
/// separate the parts unambiguously.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SliceId<'a> {
    /// Patient folder name.
    pub patient: &'a str,
    /// Nodule folder name.
    pub nodule: &'a str,
    /// The image file's name without its extension.
    pub stem: &'a str,
}

impl<'a> SliceId<'a> {
    /// The id of image file `file_name` in `patient/nodule/images/`.
    pub fn of_file(patient: &'a str, nodule: &'a str, file_name: &'a str) -> Self {
        let stem = Path::new(file_name)
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or(file_name);
        Self {
            patient,
            nodule,
            stem,
        }
    }

    /// Splits an id into its parts; `None` when it has fewer than three.
    pub fn parse(id: &'a str) -> Option<Self> {
        let mut parts = id.splitn(3, '/');
        Some(Self {
            patient: parts.next()?,
            nodule: parts.next()?,
            stem: parts.next()?,
        })
    }
}

impl fmt::Display for SliceId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.patient, self.nodule, self.stem)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_take_the_file_stem() {
        let id = SliceId::of_file("LIDC-IDRI-0001", "Nodule 2", "slice-7.png");
        assert_eq!(id.to_string(), "LIDC-IDRI-0001/Nodule 2/slice-7");
        assert_eq!(SliceId::parse("LIDC-IDRI-0001/Nodule 2/slice-7"), Some(id));
        assert_eq!(SliceId::of_file("p", "n", "a.b.png").stem, "a.b");
        assert_eq!(SliceId::of_file("p", "n", "noext").stem, "noext");
        assert_eq!(SliceId::parse("flat"), None);
        assert_eq!(SliceId::parse("p/n"), None);
    }
}
