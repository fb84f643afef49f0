//! Walks the LIDC slice tree (`<patient>/<nodule>/images/*.png` with `mask-0..3/`) into a sorted
//! list of slice jobs, recording every unusable file or folder instead of failing. Only regular
//! files become jobs (FIFOs and devices are never opened), and folders whose names are not
//! UTF-8 are rejected rather than read lossily into ids they could share.

use crate::data::fusion::RATERS;
use crate::natural::{natural_cmp, trailing_number};
use crate::pixels::file_bytes::file_kind;
use crate::prepare::reject::{Reject, RejectReason, TreePlace};
use crate::slice_id::SliceId;
use rayon::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// One image to decode, with the mask files that exist for it.
#[derive(Debug, Clone)]
pub struct SliceJob {
    /// Patient folder name.
    pub patient_id: String,
    /// Nodule folder name.
    pub nodule_id: String,
    /// Image file name (lossy UTF-8).
    pub slice_name: String,
    /// The number in the file stem.
    pub slice_index: Option<i32>,
    /// Absolute path of the image.
    pub image: PathBuf,
    /// Path relative to the input root, for messages and rejects.
    pub relative: String,
    /// Mask file of rater r, when it exists.
    pub masks: [Option<PathBuf>; RATERS],
}

impl SliceJob {
    /// `patient/nodule/file-stem`.
    pub fn slice_id(&self) -> String {
        SliceId::of_file(&self.patient_id, &self.nodule_id, &self.slice_name).to_string()
    }

    /// Where this slice sits in the tree.
    pub fn place(&self) -> TreePlace {
        TreePlace {
            patient_id: Some(self.patient_id.clone()),
            nodule_id: Some(self.nodule_id.clone()),
            slice_name: Some(self.slice_name.clone()),
        }
    }
}

/// The result of walking a tree.
#[derive(Debug, Default)]
pub struct TreeWalk {
    /// Slices to decode, sorted by patient, nodule, slice index and name.
    pub jobs: Vec<SliceJob>,
    /// Unusable files and folders found while walking.
    pub rejects: Vec<Reject>,
    /// Stray files (`.DS_Store`, `Thumbs.db`, `*.txt`, hidden files, non-PNG files in image
    /// folders) and unknown folders, skipped on purpose.
    pub ignored: usize,
    /// Patient folders found.
    pub patients: usize,
    /// Nodule folders with an `images/` folder.
    pub nodules: usize,
}

/// Whether a stray file is skipped silently (but counted) rather than rejected.
pub fn is_stray_file(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    name.starts_with('.')
        || lower == "thumbs.db"
        || lower == "desktop.ini"
        || [".txt", ".md", ".csv", ".json", ".xml", ".log"]
            .iter()
            .any(|ext| lower.ends_with(ext))
}

fn is_png(name: &str) -> bool {
    name.to_ascii_lowercase().ends_with(".png")
}

#[cfg(target_os = "linux")]
const ELOOP: i32 = 40;
#[cfg(not(target_os = "linux"))]
const ELOOP: i32 = 62;

/// What a directory entry turned out to be.
enum EntryKind {
    Dir,
    File,
    /// Unusable; the reason and message are recorded by the caller.
    Bad(RejectReason, String),
}

/// A folder entry as listed: its name (lossy UTF-8, and as the OS gave it), path and, where the
/// OS says so without another system call, its type.
struct Entry {
    name: String,
    os_name: OsString,
    path: PathBuf,
    file_type: Option<fs::FileType>,
}

impl Entry {
    /// Whether the name is valid UTF-8 (then `name` is exactly it).
    fn is_utf8(&self) -> bool {
        self.os_name.to_str().is_some()
    }
}

/// Classifies an entry. Plain files and folders are known from the listing (no extra system
/// call on the hot path); symbolic links and anything unusual are followed with `metadata`,
/// catching loops back to `ancestors`, and anything that is not a regular file or folder
/// (a FIFO, a socket, a device, or a link to one) is unusable.
fn classify(entry: &Entry, ancestors: &[PathBuf]) -> EntryKind {
    match entry.file_type {
        Some(t) if t.is_dir() => EntryKind::Dir,
        Some(t) if t.is_file() => EntryKind::File,
        _ => classify_path(&entry.path, ancestors),
    }
}

/// `path` with the bytes that are not UTF-8 written as `\xNN`, so that two names differing
/// only there stay distinct in messages.
pub fn escaped(path: &Path) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let mut out = String::new();
        for chunk in path.as_os_str().as_bytes().utf8_chunks() {
            out.push_str(chunk.valid());
            for b in chunk.invalid() {
                out.push_str(&format!("\\x{b:02x}"));
            }
        }
        out
    }
    #[cfg(not(unix))]
    path.to_string_lossy().into_owned()
}

/// Classifies `path`, following symlinks, and catching loops back to `ancestors` (folders as
/// walked, not yet resolved).
fn classify_path(path: &Path, ancestors: &[PathBuf]) -> EntryKind {
    match fs::metadata(path) {
        Ok(meta) if meta.is_dir() => {
            let is_link = fs::symlink_metadata(path)
                .map(|m| m.file_type().is_symlink())
                .unwrap_or(false);
            if is_link {
                // Ancestors are kept as walked and resolved only here: links are rare, and
                // resolving every folder up front cost a `realpath` per patient and nodule.
                if let Ok(target) = fs::canonicalize(path) {
                    let resolved = |a: &PathBuf| fs::canonicalize(a).unwrap_or_else(|_| a.clone());
                    if ancestors.iter().any(|a| resolved(a).starts_with(&target)) {
                        return EntryKind::Bad(
                            RejectReason::SymlinkLoop,
                            format!("symbolic link to an ancestor folder {}", target.display()),
                        );
                    }
                }
            }
            EntryKind::Dir
        }
        Ok(meta) if meta.is_file() => EntryKind::File,
        Ok(meta) => EntryKind::Bad(
            RejectReason::NotARegularFile,
            format!(
                "{}, not a regular file; not opened",
                file_kind(&meta.file_type())
            ),
        ),
        Err(e) => classify_error(&e),
    }
}

/// Maps a metadata error to a reject reason.
fn classify_error(e: &io::Error) -> EntryKind {
    if e.raw_os_error() == Some(ELOOP) {
        EntryKind::Bad(RejectReason::SymlinkLoop, "symbolic link loop".into())
    } else if e.kind() == io::ErrorKind::NotFound {
        EntryKind::Bad(
            RejectReason::BrokenLink,
            "symbolic link to a missing target".into(),
        )
    } else {
        EntryKind::Bad(RejectReason::IoError, e.to_string())
    }
}

/// Maps a `read_dir` failure to a reject reason.
pub fn list_error_reason(e: &io::Error) -> RejectReason {
    if e.kind() == io::ErrorKind::PermissionDenied {
        RejectReason::UnreadableDir
    } else if e.raw_os_error() == Some(ELOOP) {
        RejectReason::SymlinkLoop
    } else {
        RejectReason::IoError
    }
}

struct Walker<'a> {
    root: &'a Path,
    out: TreeWalk,
}

impl Walker<'_> {
    fn relative(&self, path: &Path) -> String {
        path.strip_prefix(self.root)
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned()
    }

    fn reject(&mut self, path: &Path, place: TreePlace, reason: RejectReason, detail: String) {
        let rel = self.relative(path);
        self.out
            .rejects
            .push(Reject::unlogged(rel, place, reason, detail));
    }

    /// Rejects a folder whose name is not UTF-8, naming it with the odd bytes escaped.
    fn reject_non_utf8(&mut self, entry: &Entry, mut place: TreePlace, level: &str) {
        let name = escaped(Path::new(&entry.os_name));
        let rel = escaped(entry.path.strip_prefix(self.root).unwrap_or(&entry.path));
        let detail = format!(
            "{level} folder name `{name}` is not valid UTF-8; rename it (read lossily it could share an id with another {level})"
        );
        match level {
            "patient" => place.patient_id = Some(name),
            _ => place.nodule_id = Some(name),
        }
        self.out.rejects.push(Reject::unlogged(
            rel,
            place,
            RejectReason::NonUtf8Name,
            detail,
        ));
    }

    /// Lists a folder's entries sorted naturally, or records why it cannot be listed.
    fn list(&mut self, dir: &Path, place: &TreePlace) -> Option<Vec<Entry>> {
        let entries = match fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) => {
                self.reject(dir, place.clone(), list_error_reason(&e), e.to_string());
                return None;
            }
        };
        let mut items: Vec<Entry> = Vec::new();
        for entry in entries {
            match entry {
                Ok(entry) => {
                    let os_name: OsString = entry.file_name();
                    items.push(Entry {
                        name: os_name.to_string_lossy().into_owned(),
                        os_name,
                        path: entry.path(),
                        file_type: entry.file_type().ok(),
                    });
                }
                Err(e) => {
                    self.reject(dir, place.clone(), list_error_reason(&e), e.to_string());
                    return None;
                }
            }
        }
        items.sort_by(|a, b| natural_cmp(&a.name, &b.name).then_with(|| a.path.cmp(&b.path)));
        Some(items)
    }

    /// Walks one entry of the root: a patient folder, or something to ignore or reject.
    fn walk_root_entry(&mut self, entry: &Entry, ancestors: &[PathBuf]) {
        match classify(entry, ancestors) {
            EntryKind::Dir if !entry.is_utf8() => {
                self.reject_non_utf8(entry, TreePlace::default(), "patient")
            }
            EntryKind::Dir => {
                self.out.patients += 1;
                self.walk_patient(&entry.name, &entry.path, ancestors);
            }
            EntryKind::File if is_stray_file(&entry.name) => self.out.ignored += 1,
            EntryKind::File => self.reject(
                &entry.path,
                TreePlace::default(),
                RejectReason::NotADirectory,
                "a file where a patient folder belongs".into(),
            ),
            EntryKind::Bad(reason, detail) => {
                self.reject(&entry.path, TreePlace::default(), reason, detail)
            }
        }
    }

    fn walk_patient(&mut self, patient: &str, dir: &Path, ancestors: &[PathBuf]) {
        let place = TreePlace {
            patient_id: Some(patient.to_string()),
            ..TreePlace::default()
        };
        let Some(items) = self.list(dir, &place) else {
            return;
        };
        let mut inner = ancestors.to_vec();
        inner.push(dir.to_path_buf());
        for entry in items {
            let (name, path) = (&entry.name, &entry.path);
            match classify(&entry, &inner) {
                EntryKind::Dir if !entry.is_utf8() => {
                    self.reject_non_utf8(&entry, place.clone(), "nodule")
                }
                EntryKind::Dir => self.walk_nodule(patient, name, path, &inner),
                EntryKind::File if is_stray_file(name) => self.out.ignored += 1,
                EntryKind::File => self.reject(
                    path,
                    place.clone(),
                    RejectReason::NotADirectory,
                    "a file where a nodule folder belongs".into(),
                ),
                EntryKind::Bad(reason, detail) => self.reject(path, place.clone(), reason, detail),
            }
        }
    }

    fn walk_nodule(&mut self, patient: &str, nodule: &str, dir: &Path, ancestors: &[PathBuf]) {
        let place = TreePlace {
            patient_id: Some(patient.to_string()),
            nodule_id: Some(nodule.to_string()),
            slice_name: None,
        };
        let Some(items) = self.list(dir, &place) else {
            return;
        };
        let mut inner = ancestors.to_vec();
        inner.push(dir.to_path_buf());
        let mut images_dir: Option<PathBuf> = None;
        let mut mask_dirs: [Option<PathBuf>; RATERS] = Default::default();
        for entry in items {
            let kind = classify(&entry, &inner);
            let Entry { name, path, .. } = entry;
            let rater = name
                .strip_prefix("mask-")
                .and_then(|k| k.parse::<usize>().ok())
                .filter(|&k| k < RATERS && name == format!("mask-{k}"));
            let wanted = name == "images" || rater.is_some();
            match kind {
                EntryKind::Dir if name == "images" => images_dir = Some(path),
                EntryKind::Dir => match rater {
                    Some(k) => mask_dirs[k] = Some(path),
                    None => self.out.ignored += 1,
                },
                EntryKind::File if wanted => self.reject(
                    &path,
                    place.clone(),
                    RejectReason::NotADirectory,
                    format!("`{name}` is a file; a folder was expected"),
                ),
                EntryKind::File => self.out.ignored += 1,
                EntryKind::Bad(reason, detail) => self.reject(&path, place.clone(), reason, detail),
            }
        }
        let Some(images_dir) = images_dir else {
            if !self
                .out
                .rejects
                .iter()
                .any(|r| r.place == place && r.path.ends_with("images"))
            {
                self.reject(
                    dir,
                    place,
                    RejectReason::NoImagesDir,
                    "nodule folder has no images/ folder".into(),
                );
            }
            return;
        };
        self.out.nodules += 1;
        self.collect_slices(&place, &images_dir, &mask_dirs, &inner);
    }

    fn collect_slices(
        &mut self,
        place: &TreePlace,
        images_dir: &Path,
        mask_dirs: &[Option<PathBuf>; RATERS],
        ancestors: &[PathBuf],
    ) {
        let Some(images) = self.list(images_dir, place) else {
            return;
        };
        // Masks pair with images by their names as the OS gave them, not as read lossily.
        let mut image_names: BTreeSet<OsString> = BTreeSet::new();
        let mut jobs = Vec::new();
        for entry in images {
            let kind = classify(&entry, ancestors);
            let Entry {
                name,
                os_name,
                path,
                ..
            } = entry;
            match kind {
                EntryKind::File if is_png(&name) => {
                    image_names.insert(os_name.clone());
                    jobs.push((name, os_name, path));
                }
                EntryKind::File | EntryKind::Dir => self.out.ignored += 1,
                EntryKind::Bad(reason, detail) => {
                    let mut p = place.clone();
                    p.slice_name = Some(name);
                    self.reject(&path, p, reason, detail)
                }
            }
        }
        let mut mask_files: [BTreeMap<OsString, PathBuf>; RATERS] = Default::default();
        for (k, dir) in mask_dirs.iter().enumerate() {
            let Some(dir) = dir else { continue };
            let Some(items) = self.list(dir, place) else {
                continue;
            };
            for entry in items {
                let kind = classify(&entry, ancestors);
                let Entry {
                    name,
                    os_name,
                    path,
                    ..
                } = entry;
                match kind {
                    EntryKind::File if image_names.contains(&os_name) => {
                        mask_files[k].insert(os_name, path);
                    }
                    EntryKind::File if is_png(&name) => {
                        let mut p = place.clone();
                        p.slice_name = Some(name);
                        self.reject(
                            &path,
                            p,
                            RejectReason::OrphanMask,
                            format!("mask-{k} file has no image of the same name"),
                        );
                    }
                    EntryKind::File | EntryKind::Dir => self.out.ignored += 1,
                    EntryKind::Bad(reason, detail) => {
                        let mut p = place.clone();
                        p.slice_name = Some(name);
                        self.reject(&path, p, reason, detail)
                    }
                }
            }
        }
        let patient_id = place.patient_id.clone().unwrap_or_default();
        let nodule_id = place.nodule_id.clone().unwrap_or_default();
        for (name, os_name, path) in jobs {
            let masks: [Option<PathBuf>; RATERS] =
                std::array::from_fn(|k| mask_files[k].get(&os_name).cloned());
            let stem = Path::new(&name)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            self.out.jobs.push(SliceJob {
                patient_id: patient_id.clone(),
                nodule_id: nodule_id.clone(),
                slice_index: trailing_number(&stem),
                slice_name: name,
                relative: self.relative(&path),
                image: path,
                masks,
            });
        }
    }
}

/// Walks `root`, one patient folder per task on the current rayon pool. Never fails: problems
/// become rejects (not logged yet: see [`Reject::unlogged`]). The result does not depend on the
/// number of threads.
pub fn walk(root: &Path) -> TreeWalk {
    let ancestors = vec![root.to_path_buf()];
    let mut top = Walker {
        root,
        out: TreeWalk::default(),
    };
    let items = top.list(root, &TreePlace::default()).unwrap_or_default();
    let parts: Vec<TreeWalk> = items
        .par_iter()
        .map(|entry| {
            let mut w = Walker {
                root,
                out: TreeWalk::default(),
            };
            w.walk_root_entry(entry, &ancestors);
            w.out
        })
        .collect();
    let mut out = top.out;
    for part in parts {
        out.jobs.extend(part.jobs);
        out.rejects.extend(part.rejects);
        out.ignored += part.ignored;
        out.patients += part.patients;
        out.nodules += part.nodules;
    }
    out.jobs.sort_by(|a, b| {
        natural_cmp(&a.patient_id, &b.patient_id)
            .then_with(|| natural_cmp(&a.nodule_id, &b.nodule_id))
            .then_with(|| match (a.slice_index, b.slice_index) {
                (Some(x), Some(y)) => x.cmp(&y),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            })
            .then_with(|| natural_cmp(&a.slice_name, &b.slice_name))
    });
    dedupe_slice_ids(&mut out);
    out
}

/// Keeps the first of several files that map to one slice id; rejects the rest.
fn dedupe_slice_ids(out: &mut TreeWalk) {
    let mut seen = std::collections::HashSet::new();
    let mut kept = Vec::with_capacity(out.jobs.len());
    for job in std::mem::take(&mut out.jobs) {
        if seen.insert(job.slice_id()) {
            kept.push(job);
        } else {
            out.rejects.push(Reject::unlogged(
                job.relative.clone(),
                job.place(),
                RejectReason::DuplicateSliceId,
                format!("slice id {} is taken by another file", job.slice_id()),
            ));
        }
    }
    out.jobs = kept;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, b"x").unwrap();
    }

    #[test]
    fn walk_finds_slices_masks_and_strays() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        touch(&r.join("P1/nodule-10/images/slice-1.png"));
        touch(&r.join("P1/nodule-2/images/slice-10.png"));
        touch(&r.join("P1/nodule-2/images/slice-2.png"));
        touch(&r.join("P1/nodule-2/mask-0/slice-2.png"));
        touch(&r.join("P1/nodule-2/mask-3/slice-10.png"));
        touch(&r.join("P1/nodule-2/mask-3/orphan.png"));
        touch(&r.join("P1/nodule-2/images/notes.txt"));
        touch(&r.join(".DS_Store"));
        touch(&r.join("P2/nodule-1/mask-0/a.png"));
        touch(&r.join("stray.bin"));
        let w = walk(r);
        let ids: Vec<String> = w.jobs.iter().map(|j| j.slice_id()).collect();
        assert_eq!(
            ids,
            [
                "P1/nodule-2/slice-2",
                "P1/nodule-2/slice-10",
                "P1/nodule-10/slice-1"
            ]
        );
        assert!(w.jobs[0].masks[0].is_some() && w.jobs[0].masks[3].is_none());
        assert!(w.jobs[1].masks[3].is_some() && w.jobs[1].masks[0].is_none());
        assert_eq!(w.ignored, 2);
        assert_eq!(w.patients, 2);
        assert_eq!(w.nodules, 2);
        let mut codes: Vec<(&str, &str)> = w
            .rejects
            .iter()
            .map(|r| (r.reason.code(), r.path.as_str()))
            .collect();
        codes.sort();
        assert_eq!(
            codes,
            [
                ("no_images_dir", "P2/nodule-1"),
                ("not_a_directory", "stray.bin"),
                ("orphan_mask", "P1/nodule-2/mask-3/orphan.png"),
            ]
        );
    }

    #[test]
    fn permission_errors_map_to_unreadable_dir() {
        let e = io::Error::from(io::ErrorKind::PermissionDenied);
        assert_eq!(list_error_reason(&e), RejectReason::UnreadableDir);
        let e = io::Error::from_raw_os_error(ELOOP);
        assert_eq!(list_error_reason(&e), RejectReason::SymlinkLoop);
    }

    #[test]
    fn odd_bytes_stay_distinct_in_names_and_in_mask_pairing() {
        use std::os::unix::ffi::OsStrExt;
        let os = |b: &[u8]| std::ffi::OsStr::from_bytes(b).to_os_string();
        assert_eq!(
            escaped(Path::new(&os(b"P-\xff/n\xc3\xa9"))),
            "P-\\xff/n\u{e9}"
        );
        let d = tempfile::tempdir().unwrap();
        let n = d.path().join("P1/n1");
        touch(&n.join("images").join(os(b"a\xff.png")));
        touch(&n.join("mask-0").join(os(b"a\xfe.png")));
        touch(&n.join("mask-1").join(os(b"a\xff.png")));
        touch(&d.path().join(os(b"P\xff")).join("n1/images/s.png"));
        let w = walk(d.path());
        assert_eq!(w.jobs.len(), 1);
        let masks: Vec<bool> = w.jobs[0].masks.iter().map(Option::is_some).collect();
        assert_eq!(
            masks,
            [false, true, false, false],
            "masks pair by exact name"
        );
        let mut codes: Vec<(&str, &str)> = w
            .rejects
            .iter()
            .map(|r| (r.reason.code(), r.path.as_str()))
            .collect();
        codes.sort();
        assert_eq!(
            codes,
            [
                ("non_utf8_name", "P\\xff"),
                ("orphan_mask", "P1/n1/mask-0/a\u{fffd}.png")
            ]
        );
    }

    #[test]
    fn stray_names() {
        for n in [".DS_Store", "Thumbs.db", "readme.TXT", ".hidden"] {
            assert!(is_stray_file(n), "{n}");
        }
        assert!(!is_stray_file("slice-1.png"));
    }
}
