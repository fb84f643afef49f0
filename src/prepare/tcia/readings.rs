//! The readers' XML files of a TCIA download, parsed up front (they are small) and handed to the
//! series they read as the patient folders are planned; what no series claimed is rejected at
//! the end.

use crate::pixels::file_bytes::read_regular_file;
use crate::prepare::reject::{Reject, RejectReason, TreePlace};
use crate::prepare::tcia::files::FoundFile;
use crate::prepare::tcia::lidc_xml::{self, LidcRead, ReadMessage};
use rayon::prelude::*;
use std::collections::BTreeMap;

/// XML files longer than this are not read (the largest LIDC reading is ~2 MB).
const MAX_XML_BYTES: u64 = 32 << 20;

/// The CT readings by series UID, each with its shown path, in path order.
#[derive(Debug, Default)]
pub struct ReadingIndex {
    by_series: BTreeMap<String, Vec<(String, TreePlace, LidcRead)>>,
    /// LIDC CT readings read.
    pub readings: usize,
    /// Chest X-ray readings (`IdriReadMessage`), skipped.
    pub chest_xray: usize,
}

impl ReadingIndex {
    /// Reads and parses `xml_files` on the current rayon pool; returns the index and the rejects
    /// of files that are not readings.
    pub fn read(xml_files: &[FoundFile]) -> (Self, Vec<Reject>) {
        let parsed: Vec<Result<ReadMessage, (RejectReason, String)>> = xml_files
            .par_iter()
            .map(|f| {
                let bytes = read_regular_file(&f.path, MAX_XML_BYTES).map_err(|e| match e.kind() {
                    std::io::ErrorKind::FileTooLarge => (
                        RejectReason::TooLarge,
                        format!("more than {MAX_XML_BYTES} bytes; the largest LIDC reading is ~2 MB"),
                    ),
                    _ => (RejectReason::IoError, e.to_string()),
                })?;
                lidc_xml::parse(&String::from_utf8_lossy(&bytes)).map_err(|e| {
                    let reason = match e {
                        lidc_xml::XmlError::Malformed(_) => RejectReason::XmlMalformed,
                        lidc_xml::XmlError::NotLidc(_) => RejectReason::XmlNotLidc,
                    };
                    (reason, e.to_string())
                })
            })
            .collect();
        let mut index = Self::default();
        let mut rejects = Vec::new();
        for (f, result) in xml_files.iter().zip(parsed) {
            match result {
                Ok(ReadMessage::Ct(read)) => {
                    index.readings += 1;
                    index
                        .by_series
                        .entry(read.series_uid.clone())
                        .or_default()
                        .push((f.shown.clone(), f.place(), read));
                }
                Ok(ReadMessage::ChestXray) => index.chest_xray += 1,
                Err((reason, detail)) => {
                    rejects.push(Reject::unlogged(f.shown.clone(), f.place(), reason, detail))
                }
            }
        }
        (index, rejects)
    }

    /// Hands series `uid` its reading: the first by path, with a `duplicate_xml` reject (placed
    /// at `place`) for each other one. `None` when the series has none.
    pub fn take(
        &mut self,
        uid: &str,
        place: &TreePlace,
    ) -> (Option<(String, LidcRead)>, Vec<Reject>) {
        let Some(mut list) = self.by_series.remove(uid) else {
            return (None, Vec::new());
        };
        let (first_shown, _, first_read) = list.remove(0);
        let rejects = list
            .into_iter()
            .map(|(shown, _, _)| {
                Reject::unlogged(
                    shown,
                    place.clone(),
                    RejectReason::DuplicateXml,
                    format!("a second reading of series {uid}; {first_shown} is used"),
                )
            })
            .collect();
        (Some((first_shown, first_read)), rejects)
    }

    /// A reject for every reading no series claimed.
    pub fn unclaimed(self) -> Vec<Reject> {
        self.by_series
            .into_iter()
            .flat_map(|(uid, list)| {
                list.into_iter().map(move |(shown, place, _)| {
                    Reject::unlogged(
                        shown,
                        place,
                        RejectReason::XmlWithoutSeries,
                        format!("a reading of series {uid}, which is not in the input"),
                    )
                })
            })
            .collect()
    }

    /// Whether no CT reading was found.
    pub fn is_empty(&self) -> bool {
        self.readings == 0
    }
}
