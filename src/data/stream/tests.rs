//! Streaming tests against tiny real shards.

use super::*;
use crate::data::shards::writer::ImageCompression;
use crate::data::test_shards::{build, build_with, record, Fixture};
use std::collections::HashSet;
use std::time::{Duration, Instant};

fn fixture() -> Fixture {
    // 6 patients x 5 slices = 30 rows: 3 shards of 10 rows, row groups of 4, 4, 2.
    build(6, 5, 10, 4)
}

fn ids(data: &DataDir, index: &SliceIndex, options: &StreamOptions) -> Vec<String> {
    ShardStream::open(data, index, options)
        .unwrap()
        .map(|s| s.unwrap().slice_id)
        .collect()
}

fn index_ids(index: &SliceIndex) -> Vec<String> {
    index.entries().iter().map(|e| e.slice_id.clone()).collect()
}

fn shuffled(seed: u64, epoch: u64, buffer: usize) -> StreamOptions {
    StreamOptions {
        fusion: RaterFusion::Union,
        capacity: 2,
        order: Order::Shuffled {
            seed,
            epoch,
            buffer,
        },
    }
}

#[test]
fn index_tables_read_back_and_filter_by_patient() {
    let f = fixture();
    assert_eq!(SliceIndex::read(&f.data.train_index()).unwrap(), f.train);
    assert_eq!(SliceIndex::read(&f.data.val_index()).unwrap(), f.val);
    let keep: HashSet<String> = ["P02".to_string()].into();
    let only = f.all.clone().only_patients(&keep);
    assert_eq!(only.len(), 5);
    assert_eq!(only.patients().into_iter().collect::<Vec<_>>(), vec!["P02"]);
    let err = SliceIndex::read(&f.data.root().join("nope.parquet")).unwrap_err();
    assert!(err.to_string().contains("nope.parquet"), "{err}");
}

#[test]
fn validation_streams_exactly_the_indexed_rows_in_index_order() {
    // Plain and zstd image columns read back identically.
    let zstd = build_with(6, 5, 10, 4, ImageCompression::Zstd);
    let opts = StreamOptions::validation(RaterFusion::Union);
    let zstd_samples: Vec<SliceSample> = ShardStream::open(&zstd.data, &zstd.val, &opts)
        .unwrap()
        .collect::<Result<_>>()
        .unwrap();
    let f = fixture();
    let samples: Vec<SliceSample> = ShardStream::open(&f.data, &f.val, &opts)
        .unwrap()
        .collect::<Result<_>>()
        .unwrap();
    assert_eq!(samples, zstd_samples);
    assert_eq!(
        samples
            .iter()
            .map(|s| s.slice_id.clone())
            .collect::<Vec<_>>(),
        index_ids(&f.val)
    );
    // Contents match what was written.
    for s in &samples {
        let p: usize = s.patient_id[1..].parse().unwrap();
        let k: usize = s.slice_id.rsplit('-').next().unwrap().parse().unwrap();
        let r = record(p, k);
        assert_eq!((s.height, s.width), (r.height, r.width));
        assert_eq!(s.image, r.image);
        assert_eq!(s.mask, r.mask);
    }

    // A sparse, non-monotone index comes out exactly as listed.
    let mut picked: Vec<IndexEntry> = f.all.entries().iter().step_by(3).cloned().collect();
    picked.reverse();
    picked.swap(0, 4);
    let index = SliceIndex::from_entries(picked);
    assert_eq!(ids(&f.data, &index, &opts), index_ids(&index));
    assert!(ids(&f.data, &SliceIndex::default(), &opts).is_empty());
}

#[test]
fn fusion_rules_shape_the_streamed_mask() {
    let f = fixture();
    for (fusion, pixels) in [
        (RaterFusion::Union, 2),
        (RaterFusion::AtLeast(1), 2),
        (RaterFusion::AtLeast(2), 1),
        (RaterFusion::AtLeast(3), 0),
        // Three raters present: two needed.
        (RaterFusion::Majority, 1),
    ] {
        let opts = StreamOptions::validation(fusion);
        for s in ShardStream::open(&f.data, &f.val, &opts).unwrap() {
            let s = s.unwrap();
            let on: usize = s.mask.iter().map(|&m| usize::from(m)).sum();
            // Slices whose two marked pixels coincide have one union pixel.
            let k: usize = s.slice_id.rsplit('-').next().unwrap().parse().unwrap();
            let coincide = (k % s.height) * s.width + (k % s.width) == s.height * s.width - 1;
            let want = if coincide && pixels == 2 { 1 } else { pixels };
            assert_eq!(on, want, "{fusion} on {}", s.slice_id);
        }
    }
}

#[test]
fn shuffled_order_is_a_seeded_permutation_per_epoch() {
    let f = fixture();
    let want = {
        let mut v = index_ids(&f.all);
        v.sort();
        v
    };
    let a = ids(&f.data, &f.all, &shuffled(7, 0, 4));
    let b = ids(&f.data, &f.all, &shuffled(7, 0, 4));
    let c = ids(&f.data, &f.all, &shuffled(7, 1, 4));
    let d = ids(&f.data, &f.all, &shuffled(8, 0, 4));
    assert_eq!(a, b, "same seed and epoch, same order");
    assert_ne!(a, c, "another epoch, another order");
    assert_ne!(a, d, "another seed, another order");
    assert_ne!(a, index_ids(&f.all));
    for order in [&a, &c, &d] {
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(sorted, want);
    }
    // A buffer larger than the pass still emits everything.
    assert_eq!(ids(&f.data, &f.all, &shuffled(7, 0, 512)).len(), 30);
}

#[test]
fn training_stream_never_yields_a_validation_patient() {
    let f = fixture();
    let train = SliceIndex::read(&f.data.train_index()).unwrap();
    let val = SliceIndex::read(&f.data.val_index()).unwrap();
    let val_patients: HashSet<String> = val.patients().into_iter().map(String::from).collect();
    assert!(!val_patients.is_empty());
    let opts = StreamOptions::training(RaterFusion::Majority, 1, 0);
    let mut n = 0;
    for s in ShardStream::open(&f.data, &train, &opts).unwrap() {
        let s = s.unwrap();
        assert!(!val_patients.contains(&s.patient_id), "{}", s.slice_id);
        n += 1;
    }
    assert_eq!(n, train.len());
}

#[test]
fn stale_index_errors_name_the_shard() {
    let f = fixture();
    let opts = StreamOptions::validation(RaterFusion::Union);
    let first_error = |entries: Vec<IndexEntry>| -> Error {
        let mut stream =
            ShardStream::open(&f.data, &SliceIndex::from_entries(entries), &opts).unwrap();
        let err = stream.find_map(|s| s.err()).expect("an error");
        assert!(stream.next().is_none(), "the stream ends after an error");
        err
    };
    let mut wrong_patient = f.val.entries().to_vec();
    wrong_patient[2].patient_id = "P99".into();
    let shard = wrong_patient[2].shard.clone();
    let err = first_error(wrong_patient);
    let text = err.to_string();
    assert!(
        text.starts_with(&f.data.shard_path(&shard).display().to_string()),
        "{text}"
    );
    assert!(text.contains("stale") && text.contains("P99"), "{text}");
    assert_eq!(err.exit_code(), 2);

    let mut wrong_row = f.val.entries().to_vec();
    wrong_row[0].row = 10_000;
    let text = first_error(wrong_row).to_string();
    assert!(
        text.contains("row 10000") && text.contains("stale"),
        "{text}"
    );

    let mut missing = f.val.entries().to_vec();
    missing[1].shard = "slices-00042.parquet".into();
    let text = first_error(missing).to_string();
    assert!(text.contains("slices-00042.parquet"), "{text}");
}

#[test]
fn bounded_queue_holds_at_most_capacity_plus_one() {
    let f = fixture();
    let opts = StreamOptions {
        fusion: RaterFusion::Union,
        capacity: 2,
        order: Order::Index,
    };
    let mut stream = ShardStream::open(&f.data, &f.all, &opts).unwrap();
    let mut n = 0;
    for s in stream.by_ref() {
        s.unwrap();
        n += 1;
        std::thread::sleep(Duration::from_millis(3));
    }
    assert_eq!(n, 30);
    let max = stream.max_in_flight();
    assert!((2..=3).contains(&max), "max in flight {max}");
}

#[test]
fn dropping_a_stream_midway_stops_the_thread_promptly() {
    let f = build(4, 40, 64, 8);
    for order in [Order::Index, shuffled(1, 0, 512).order] {
        let opts = StreamOptions {
            fusion: RaterFusion::Union,
            capacity: 1,
            order,
        };
        let mut stream = ShardStream::open(&f.data, &f.all, &opts).unwrap();
        stream.next().unwrap().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let start = Instant::now();
        drop(stream); // joins the reader thread
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}
