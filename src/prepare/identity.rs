//! Which tree a data directory was prepared from: recorded in `prepare.json` and compared on a
//! rerun, so that a complete directory prepared from another tree (or from this tree before it
//! changed) is an error instead of "already complete".

use crate::data::prepare_record::{InputIdentity, PrepareRecord};
use crate::error::{Error, Result};
use crate::layout::DataDir;
use crate::prepare::walk::TreeWalk;
use std::fmt::Write;
use std::path::Path;

/// The identity of the tree at `canonical_input` as `tree` found it. Costs no system call: it
/// hashes the walk's result.
pub fn identity(canonical_input: &Path, tree: &TreeWalk) -> InputIdentity {
    let mut text = String::new();
    for job in &tree.jobs {
        let raters: String = job
            .masks
            .iter()
            .enumerate()
            .filter(|(_, m)| m.is_some())
            .map(|(k, _)| char::from(b'0' + k as u8))
            .collect();
        let _ = writeln!(text, "slice\t{}\t{raters}", job.relative);
    }
    for r in &tree.rejects {
        let _ = writeln!(text, "reject\t{}\t{}", r.path, r.reason.code());
    }
    let duplicates = tree
        .rejects
        .iter()
        .filter(|r| r.reason == crate::prepare::reject::RejectReason::DuplicateSliceId)
        .count();
    of_listing(canonical_input, &text, tree.jobs.len() + duplicates)
}

/// The identity of the input at `canonical_input` whose files and rejects `listing` names, one
/// per line; `files` is the count shown when it changed.
pub fn of_listing(canonical_input: &Path, listing: &str, files: usize) -> InputIdentity {
    InputIdentity {
        path: canonical_input.to_path_buf(),
        slice_files: files,
        signature: format!("{:016x}", crate::rng::fnv1a64(listing.as_bytes())),
    }
}

/// Refuses a rerun into the complete directory `data` (whose record is `previous`) from another
/// input, or from the same input after its files changed.
pub fn check_same_input(
    data: &DataDir,
    previous: &PrepareRecord,
    current: &InputIdentity,
) -> Result<()> {
    let refuse = |was: String| {
        Err(Error::Usage(format!(
            "{} was prepared from {was}, not from {}; pass --overwrite or another --out",
            data.root().display(),
            current.path.display()
        )))
    };
    let Some(recorded) = &previous.input else {
        // Written before the identity was kept: compare the path it was given.
        let old = &previous.config.input;
        let old = std::fs::canonicalize(old).unwrap_or_else(|_| old.clone());
        return match old == current.path {
            true => Ok(()),
            false => refuse(old.display().to_string()),
        };
    };
    if recorded.path != current.path {
        return refuse(recorded.path.display().to_string());
    }
    if recorded.signature != current.signature {
        return refuse(format!(
            "{} as it was then ({} slice files; it now has {}, or they were renamed)",
            recorded.path.display(),
            recorded.slice_files,
            current.slice_files
        ));
    }
    Ok(())
}
