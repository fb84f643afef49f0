//! How mixed the trainer's batches are (issue #17): the distinct patients in the last batches of
//! each epoch and per batch, from the real shard stream, against uniform permutations of the same
//! training index.

use lungseg::data::fusion::RaterFusion;
use lungseg::data::stream::DEFAULT_CAPACITY;
use lungseg::data::{Order, ShardStream, SliceIndex, StreamOptions};
use lungseg::layout::DataDir;
use lungseg::rng::SplitMix64;
use std::collections::HashSet;
use std::path::Path;

/// Permutations drawn per epoch for the baseline.
const PERMUTATIONS: usize = 200;

/// Distinct patients in the last `tail` batches, and the mean distinct patients per full batch.
fn mixing(patients: &[&str], batch: usize, tail: usize) -> (usize, f64) {
    let batches: Vec<&[&str]> = patients.chunks(batch).collect();
    let last: HashSet<&str> = batches
        .iter()
        .rev()
        .take(tail)
        .flat_map(|b| b.iter().copied())
        .collect();
    let full: Vec<usize> = batches
        .iter()
        .filter(|b| b.len() == batch)
        .map(|b| b.iter().collect::<HashSet<_>>().len())
        .collect();
    let per_batch = full.iter().sum::<usize>() as f64 / full.len().max(1) as f64;
    (last.len(), per_batch)
}

/// One JSON object: per epoch, the stream's figures and the permutations' mean and range.
pub fn run(
    data: &Path,
    batch: usize,
    tail: usize,
    epochs: u64,
    seed: u64,
    buffer: usize,
) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(batch > 0 && tail > 0, "--batch and --tail must be positive");
    let dir = DataDir::new(data);
    let index = SliceIndex::read(&dir.train_index())?;
    let indexed: Vec<&str> = index
        .entries()
        .iter()
        .map(|e| e.patient_id.as_str())
        .collect();
    let mut rows = Vec::new();
    for epoch in 1..=epochs {
        let options = StreamOptions {
            fusion: RaterFusion::Union,
            capacity: DEFAULT_CAPACITY,
            order: Order::Shuffled {
                seed,
                epoch,
                buffer,
            },
        };
        let streamed: Vec<String> = ShardStream::open(&dir, &index, &options)?
            .map(|s| s.map(|s| s.patient_id))
            .collect::<lungseg::error::Result<_>>()?;
        let streamed: Vec<&str> = streamed.iter().map(String::as_str).collect();
        let (tail_patients, per_batch) = mixing(&streamed, batch, tail);
        let mut rng = SplitMix64::derive(seed, &format!("order-baseline-{epoch}"));
        let mut perm = indexed.clone();
        let (mut tails, mut per) = (Vec::new(), 0.0);
        for _ in 0..PERMUTATIONS {
            rng.shuffle(&mut perm);
            let (t, p) = mixing(&perm, batch, tail);
            tails.push(t);
            per += p / PERMUTATIONS as f64;
        }
        rows.push(serde_json::json!({
            "epoch": epoch,
            "tail_patients": tail_patients,
            "per_batch_patients": per_batch,
            "permutation_tail_patients_mean":
                tails.iter().sum::<usize>() as f64 / tails.len() as f64,
            "permutation_tail_patients_min": tails.iter().min(),
            "permutation_tail_patients_max": tails.iter().max(),
            "permutation_per_batch_patients": per,
        }));
    }
    Ok(serde_json::json!({
        "what": "order", "slices": index.len(), "patients": index.patients().len(),
        "batch": batch, "tail_batches": tail, "shuffle_buffer": buffer, "seed": seed,
        "epochs": rows,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixing_counts_the_tail_and_full_batches_only() {
        // Batches of 2: [a a] [b c] [c] -> the last 2 batches hold b, c; full batches have
        // 1 and 2 patients.
        let p = ["a", "a", "b", "c", "c"];
        assert_eq!(mixing(&p, 2, 2), (2, 1.5));
        assert_eq!(mixing(&p, 2, 3).0, 3);
    }
}
