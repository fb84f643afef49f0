//! Which slices get an overlay: the K with the lowest recall among slices with any truth (a
//! bounded heap that keeps only those K slices' planes), plus a fixed seeded sample of K slice
//! positions drawn before the pass.

use crate::rng::SplitMix64;
use std::cmp::Ordering;
use std::collections::{BTreeSet, BinaryHeap};

/// The planes an overlay needs.
#[derive(Debug, Clone, PartialEq)]
pub struct OverlayCase {
    /// Slice id.
    pub slice_id: String,
    /// Native height.
    pub height: usize,
    /// Native width.
    pub width: usize,
    /// Intensities.
    pub image: Vec<f32>,
    /// Truth mask (0/1).
    pub truth: Vec<u8>,
    /// Thresholded prediction.
    pub pred: Vec<bool>,
    /// The slice's recall.
    pub recall: f64,
    /// The slice's Dice.
    pub dice: f64,
}

/// A heap entry ordered by recall (highest first out), then by position (later first out), so
/// the heap keeps the lowest recalls and, among ties, the earliest slices.
struct Entry {
    position: usize,
    case: OverlayCase,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        self.case
            .recall
            .total_cmp(&other.case.recall)
            .then(self.position.cmp(&other.position))
    }
}

/// Keeps the `k` cases with the lowest recall seen so far.
pub struct LowestRecall {
    k: usize,
    heap: BinaryHeap<Entry>,
}

impl LowestRecall {
    /// Keeps at most `k` cases.
    pub fn new(k: usize) -> Self {
        Self {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }

    /// Whether a slice with this recall at `position` would be kept (so the caller can skip
    /// building its planes).
    pub fn wants(&self, position: usize, recall: f64) -> bool {
        if self.k == 0 {
            return false;
        }
        if self.heap.len() < self.k {
            return true;
        }
        self.heap.peek().is_some_and(|top| {
            recall
                .total_cmp(&top.case.recall)
                .then(position.cmp(&top.position))
                == Ordering::Less
        })
    }

    /// Offers a case; it is kept if it is among the `k` lowest.
    pub fn offer(&mut self, position: usize, case: OverlayCase) {
        if !self.wants(position, case.recall) {
            return;
        }
        self.heap.push(Entry { position, case });
        if self.heap.len() > self.k {
            self.heap.pop();
        }
    }

    /// The kept cases, lowest recall first.
    pub fn into_sorted(self) -> Vec<OverlayCase> {
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|e| e.case)
            .collect()
    }
}

/// `k` distinct positions out of `0..n`, drawn from `seed` (all of them when `k >= n`).
pub fn seeded_sample(n: usize, k: usize, seed: u64) -> BTreeSet<usize> {
    if k >= n {
        return (0..n).collect();
    }
    let mut rng = SplitMix64::derive(seed, "eval-overlays");
    let mut picked = BTreeSet::new();
    // Floyd's algorithm: k draws, no rejection loop.
    for j in n - k..n {
        let t = rng.below(j + 1);
        if !picked.insert(t) {
            picked.insert(j);
        }
    }
    picked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(id: &str, recall: f64) -> OverlayCase {
        OverlayCase {
            slice_id: id.into(),
            height: 1,
            width: 1,
            image: vec![0.0],
            truth: vec![1],
            pred: vec![false],
            recall,
            dice: recall,
        }
    }

    #[test]
    fn keeps_the_k_lowest_recalls_with_earliest_ties() {
        let mut low = LowestRecall::new(3);
        for (i, r) in [0.9, 0.1, 0.5, 0.1, 0.0, 0.7, 0.1].into_iter().enumerate() {
            low.offer(i, case(&format!("s{i}"), r));
        }
        let kept: Vec<String> = low.into_sorted().into_iter().map(|c| c.slice_id).collect();
        assert_eq!(kept, vec!["s4", "s1", "s3"]);
        let mut none = LowestRecall::new(0);
        none.offer(0, case("a", 0.0));
        assert!(none.into_sorted().is_empty());
    }

    #[test]
    fn seeded_sample_is_fixed_distinct_and_bounded() {
        let a = seeded_sample(100, 8, 1);
        assert_eq!(a.len(), 8);
        assert!(a.iter().all(|&i| i < 100));
        assert_eq!(a, seeded_sample(100, 8, 1));
        assert_ne!(a, seeded_sample(100, 8, 2));
        assert_eq!(seeded_sample(3, 8, 1).len(), 3);
        assert!(seeded_sample(0, 8, 1).is_empty());
    }
}
