//! Test fixture: a tiny data directory with real `slices` shards and train/val slice indexes,
//! written through the same writers `prepare` and `split` use.

use crate::data::shards::writer::{ImageCompression, ShardWriter};
use crate::data::shards::SliceRecord;
use crate::data::{IndexEntry, SliceIndex};
use crate::layout::DataDir;

/// A temporary data directory with its indexes.
pub(crate) struct Fixture {
    pub _dir: tempfile::TempDir,
    pub data: DataDir,
    pub all: SliceIndex,
    pub train: SliceIndex,
    pub val: SliceIndex,
}

/// Slice `k` of patient `p`: size varies with k, one union-foreground pixel marked by raters
/// 0 and 1, one marked by rater 0 only; raters 0..=2 present. Pixel values encode (p, k).
pub(crate) fn record(p: usize, k: usize) -> SliceRecord {
    let (h, w) = (6 + k % 3, 5 + k % 2);
    let patient_id = format!("P{p:02}");
    let image = (0..h * w)
        .map(|i| (p * 100 + k) as f32 / 1000.0 + i as f32 * 1e-6)
        .collect();
    let mut rater_bits = vec![0u8; h * w];
    rater_bits[(k % h) * w + (k % w)] = 0b0011;
    rater_bits[h * w - 1] |= 0b0001;
    let mask: Vec<u8> = rater_bits.iter().map(|&b| u8::from(b != 0)).collect();
    SliceRecord {
        slice_id: format!("{patient_id}/nodule-1/slice-{k}"),
        patient_id,
        nodule_id: "nodule-1".into(),
        slice_name: format!("slice-{k}.png"),
        slice_index: Some(k as i32),
        height: h,
        width: w,
        source_bits: 8,
        image,
        mask_pixels: mask.iter().map(|&m| u64::from(m)).sum(),
        mask,
        rater_bits,
        raters_present: 0b0111,
        scan: None,
    }
}

/// `patients` patients of `slices` slices each, in shards of `shard_rows` rows with row groups
/// of `row_group_rows`. Patients with an even number go to train, odd ones to val.
pub(crate) fn build(
    patients: usize,
    slices: usize,
    shard_rows: usize,
    row_group_rows: usize,
) -> Fixture {
    build_with(
        patients,
        slices,
        shard_rows,
        row_group_rows,
        ImageCompression::None,
    )
}

/// [`build`] with an explicit storage of the image column.
pub(crate) fn build_with(
    patients: usize,
    slices: usize,
    shard_rows: usize,
    row_group_rows: usize,
    image_compression: ImageCompression,
) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::new(dir.path());
    std::fs::create_dir_all(data.shards_dir()).unwrap();
    let mut writer = ShardWriter::new(data.clone(), shard_rows, row_group_rows, image_compression);
    let mut all = Vec::new();
    for p in 0..patients {
        for k in 0..slices {
            let r = record(p, k);
            let (slice_id, patient_id) = (r.slice_id.clone(), r.patient_id.clone());
            let at = writer.push(r).unwrap();
            all.push(IndexEntry {
                slice_id,
                shard: at.shard,
                row: at.row,
                patient_id,
            });
        }
    }
    writer.finish().unwrap();
    let (train, val): (Vec<IndexEntry>, Vec<IndexEntry>) = all
        .iter()
        .cloned()
        .partition(|e| e.patient_id[1..].parse::<usize>().unwrap() % 2 == 0);
    write_index(&data.train_index(), &train);
    write_index(&data.val_index(), &val);
    Fixture {
        _dir: dir,
        data,
        all: SliceIndex::from_entries(all),
        train: SliceIndex::from_entries(train),
        val: SliceIndex::from_entries(val),
    }
}

/// Writes a `slice_index` table with the production writer.
pub(crate) fn write_index(path: &std::path::Path, entries: &[IndexEntry]) {
    let refs: Vec<&IndexEntry> = entries.iter().collect();
    crate::data::write_index(path, &refs).unwrap();
}
