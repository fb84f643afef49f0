//! Synthetic TCIA downloads (`lungseg synth --format tcia`): DICOM CT series written with
//! dicom-object, each with an LIDC XML reading by four readers who disagree, plus the traps of
//! the real download: an exclusion contour, a nodule under 3 mm, a non-nodule mark, a chest X-ray
//! reading, shuffled file names, a repeated z position, padded UIDs, a patient with two series,
//! signed and unsigned pixel storage, and a stray README.

use crate::rng::SplitMix64;
use crate::synth::{patient_id, SynthConfig, SynthError, SynthReport};
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use std::fmt::Write as _;
use std::path::Path;

/// The UID root of every synthetic UID.
const UID_ROOT: &str = "1.2.826.0.1.3680043.10.1009";
/// CT Image Storage.
const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
/// Explicit VR little endian.
const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";

/// One synthetic nodule: an ellipsoid in index units.
#[derive(Debug, Clone, Copy)]
struct Ellipsoid {
    row: f64,
    col: f64,
    k: f64,
    radius_rows: f64,
    radius_cols: f64,
    radius_k: f64,
}

impl Ellipsoid {
    /// The in-plane radii on slice `k` (zero outside the nodule).
    fn radii(&self, k: usize, scale: f64) -> (f64, f64) {
        let t = (k as f64 - self.k) / self.radius_k;
        if t.abs() >= 1.0 {
            return (0.0, 0.0);
        }
        let f = (1.0 - t * t).sqrt() * scale;
        (self.radius_rows * f, self.radius_cols * f)
    }

    fn contains(&self, k: usize, r: usize, c: usize) -> bool {
        let (a, b) = self.radii(k, 1.0);
        a > 0.0 && ((r as f64 - self.row) / a).powi(2) + ((c as f64 - self.col) / b).powi(2) <= 1.0
    }
}

/// A synthetic UID under [`UID_ROOT`].
fn uid(parts: &[u64]) -> String {
    let mut s = UID_ROOT.to_string();
    for p in parts {
        let _ = write!(s, ".{p}");
    }
    s
}

/// Writes patient `index`'s series (one, or two for the third patient) and returns the counts.
pub fn write_patient(cfg: &SynthConfig, index: usize) -> Result<SynthReport, SynthError> {
    let pid = patient_id(index);
    let mut report = SynthReport {
        patients: 1,
        ..SynthReport::default()
    };
    let series_count = if index == 3 { 2 } else { 1 };
    for s in 0..series_count {
        write_series(cfg, index, s, &mut report)?;
    }
    let patient_dir = cfg.out.join(&pid);
    if index == 1 {
        // A chest X-ray reading, which prepare must skip, and a stray file.
        let xray = patient_dir.join("xray-reading");
        super::write::create_dir(&xray)?;
        write_file(
            &xray.join("9001.xml"),
            "<?xml version=\"1.0\"?>\n<IdriReadMessage xmlns=\"http://www.nih.gov\"><ResponseHeader/></IdriReadMessage>\n",
        )?;
        write_file(&patient_dir.join("README.txt"), "synthetic TCIA download\n")?;
    }
    Ok(report)
}

fn write_file(path: &Path, text: &str) -> Result<(), SynthError> {
    std::fs::write(path, text).map_err(|cause| SynthError::Io {
        path: path.to_path_buf(),
        cause,
    })
}

/// Writes series `s` of patient `index`: its slices and its reading.
fn write_series(
    cfg: &SynthConfig,
    index: usize,
    s: usize,
    report: &mut SynthReport,
) -> Result<(), SynthError> {
    let pid = patient_id(index);
    let mut rng = SplitMix64::derive(cfg.seed, &format!("tcia/{pid}/{s}"));
    let size = cfg.tcia_size;
    let slices = cfg.tcia_slices;
    let pixel_spacing = 0.7 * 512.0 / size as f64;
    let spacing = [1.25, 2.0, 2.5][rng.below(3)];
    let z0 = -320.0 + rng.uniform(0.0, 40.0).round();
    let study = uid(&[index as u64, 1]);
    let series = uid(&[index as u64, 2, s as u64 + 1]);
    let dir = cfg
        .out
        .join(&pid)
        .join(format!("01-01-2000-{}", 30000 + index))
        .join(format!("{}-{}", 3000 + s, index));
    super::write::create_dir(&dir)?;
    let nodules: Vec<Ellipsoid> = (0..rng.range_inclusive(1, 3))
        .map(|_| {
            let mm = rng.uniform(5.0, 22.0);
            let r = mm / 2.0 / pixel_spacing;
            Ellipsoid {
                row: rng.uniform(0.3, 0.7) * size as f64,
                col: rng.uniform(0.25, 0.75) * size as f64,
                k: rng.uniform(0.3, 0.7) * slices as f64,
                radius_rows: r * rng.uniform(0.8, 1.0),
                radius_cols: r * rng.uniform(0.8, 1.0),
                radius_k: (mm / 2.0 / spacing).max(1.2),
            }
        })
        .collect();
    report.nodules += nodules.len();
    report.series += 1;
    let signed = index.is_multiple_of(2);
    let mut sops = Vec::with_capacity(slices);
    let base = SliceHeader {
        pid: &pid,
        study: &study,
        series: &series,
        sop: "",
        instance: 0,
        z: 0.0,
        pixel_spacing,
        thickness: spacing,
        size,
        signed,
    };
    for k in 0..slices {
        let sop = uid(&[index as u64, 3, s as u64 + 1, k as u64 + 1]);
        let z = z0 + k as f64 * spacing;
        let hu = slice_hu(&nodules, k, size, &mut rng);
        let name = format!("{:08x}.dcm", rng.next_u64() as u32);
        let header = SliceHeader {
            sop: &sop,
            instance: k as i32 + 1,
            z,
            ..base
        };
        write_slice(&dir.join(name), &header, &hu)?;
        report.slices += 1;
        sops.push((sop, z));
    }
    if index == 2 && s == 0 && slices > 3 {
        // A second file at slice 2's z with a higher InstanceNumber: prepare keeps the original.
        let k = 2;
        let sop = uid(&[index as u64, 3, s as u64 + 1, 9000]);
        let header = SliceHeader {
            sop: &sop,
            instance: slices as i32 + 1,
            z: sops[k].1,
            ..base
        };
        write_slice(
            &dir.join("zzduplicate.dcm"),
            &header,
            &vec![-1000.0; size * size],
        )?;
        report.slices += 1;
    }
    let xml = reading_xml(&study, &series, &nodules, &sops, index, &mut rng, report);
    write_file(&dir.join(format!("{:03}.xml", 60 + index)), &xml)
}

/// The HU picture of slice `k`: air, a body, two lungs and the nodules, with noise.
fn slice_hu(nodules: &[Ellipsoid], k: usize, size: usize, rng: &mut SplitMix64) -> Vec<f32> {
    let n = size as f64;
    let mut hu = Vec::with_capacity(size * size);
    for r in 0..size {
        for c in 0..size {
            let (y, x) = (r as f64 / n - 0.5, c as f64 / n - 0.5);
            let body = (y / 0.42).powi(2) + (x / 0.47).powi(2) <= 1.0;
            let lung = ((y / 0.3).powi(2) + ((x.abs() - 0.2) / 0.16).powi(2)) <= 1.0;
            let mut v = match (body, lung) {
                (false, _) => -1000.0,
                (true, true) => -850.0,
                (true, false) => 40.0,
            };
            if nodules.iter().any(|e| e.contains(k, r, c)) {
                v = 30.0;
            }
            hu.push((v + 12.0 * rng.normal()) as f32);
        }
    }
    hu
}

/// What a slice's header says.
#[derive(Clone, Copy)]
struct SliceHeader<'a> {
    pid: &'a str,
    study: &'a str,
    series: &'a str,
    sop: &'a str,
    instance: i32,
    z: f64,
    pixel_spacing: f64,
    thickness: f64,
    size: usize,
    /// Store HU as signed 16-bit with intercept 0 (else unsigned HU + 1024 with intercept -1024).
    signed: bool,
}

/// Writes one CT slice as an explicit-VR little-endian DICOM file.
fn write_slice(path: &Path, h: &SliceHeader<'_>, hu: &[f32]) -> Result<(), SynthError> {
    let mut obj = InMemDicomObject::new_empty();
    let mut put = |tag, vr, value: PrimitiveValue| {
        obj.put(DataElement::new(tag, vr, value));
    };
    put(tags::SOP_CLASS_UID, VR::UI, CT_IMAGE_STORAGE.into());
    put(tags::SOP_INSTANCE_UID, VR::UI, h.sop.into());
    put(tags::MODALITY, VR::CS, "CT".into());
    put(tags::PATIENT_ID, VR::LO, h.pid.into());
    put(tags::STUDY_INSTANCE_UID, VR::UI, h.study.into());
    put(tags::SERIES_INSTANCE_UID, VR::UI, h.series.into());
    put(tags::INSTANCE_NUMBER, VR::IS, h.instance.to_string().into());
    put(
        tags::IMAGE_POSITION_PATIENT,
        VR::DS,
        format!("-180\\-180\\{}", h.z).into(),
    );
    put(
        tags::PIXEL_SPACING,
        VR::DS,
        format!("{:.6}\\{:.6}", h.pixel_spacing, h.pixel_spacing).into(),
    );
    put(
        tags::SLICE_THICKNESS,
        VR::DS,
        format!("{}", h.thickness).into(),
    );
    put(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1u16));
    put(
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        "MONOCHROME2".into(),
    );
    put(tags::ROWS, VR::US, PrimitiveValue::from(h.size as u16));
    put(tags::COLUMNS, VR::US, PrimitiveValue::from(h.size as u16));
    put(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(16u16));
    put(
        tags::BITS_STORED,
        VR::US,
        PrimitiveValue::from(if h.signed { 16u16 } else { 12 }),
    );
    put(
        tags::HIGH_BIT,
        VR::US,
        PrimitiveValue::from(if h.signed { 15u16 } else { 11 }),
    );
    put(
        tags::PIXEL_REPRESENTATION,
        VR::US,
        PrimitiveValue::from(u16::from(h.signed)),
    );
    put(
        tags::RESCALE_INTERCEPT,
        VR::DS,
        (if h.signed { "0" } else { "-1024" }).into(),
    );
    put(tags::RESCALE_SLOPE, VR::DS, "1".into());
    let mut bytes = Vec::with_capacity(hu.len() * 2);
    for &v in hu {
        let v = v.round();
        if h.signed {
            bytes.extend_from_slice(&(v.clamp(-2048.0, 3071.0) as i16).to_le_bytes());
        } else {
            bytes.extend_from_slice(&((v + 1024.0).clamp(0.0, 4095.0) as u16).to_le_bytes());
        }
    }
    put(tags::PIXEL_DATA, VR::OW, PrimitiveValue::from(bytes));
    let file = obj
        .with_meta(FileMetaTableBuilder::new().transfer_syntax(EXPLICIT_VR_LE))
        .map_err(|e| SynthError::Io {
            path: path.to_path_buf(),
            cause: std::io::Error::other(e.to_string()),
        })?;
    file.write_to_file(path).map_err(|e| SynthError::Io {
        path: path.to_path_buf(),
        cause: std::io::Error::other(e.to_string()),
    })
}

/// The ring of pixels just outside an ellipse (where LIDC readers draw), ordered by angle.
fn ring(row: f64, col: f64, a: f64, b: f64) -> Vec<(i64, i64)> {
    let inside =
        |r: i64, c: i64| ((r as f64 - row) / a).powi(2) + ((c as f64 - col) / b).powi(2) <= 1.0;
    let mut points = Vec::new();
    let (r0, r1) = (
        (row - a - 2.0).floor() as i64,
        (row + a + 2.0).ceil() as i64,
    );
    let (c0, c1) = (
        (col - b - 2.0).floor() as i64,
        (col + b + 2.0).ceil() as i64,
    );
    for r in r0..=r1 {
        for c in c0..=c1 {
            if !inside(r, c)
                && (inside(r - 1, c) || inside(r + 1, c) || inside(r, c - 1) || inside(r, c + 1))
            {
                points.push((r, c));
            }
        }
    }
    let angle = |&(r, c): &(i64, i64)| (r as f64 - row).atan2(c as f64 - col);
    points.sort_by(|p, q| angle(p).total_cmp(&angle(q)));
    points
}

/// The reading of one series: four readers who outline each nodule a little differently (the
/// fourth skips the first nodule), reader 0's exclusion contour on patient 1's first nodule,
/// reader 1's mark of a nodule under 3 mm and reader 2's non-nodule.
fn reading_xml(
    study: &str,
    series: &str,
    nodules: &[Ellipsoid],
    sops: &[(String, f64)],
    index: usize,
    rng: &mut SplitMix64,
    report: &mut SynthReport,
) -> String {
    let mut x = String::new();
    let _ = writeln!(x, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
    let _ = writeln!(
        x,
        "<LidcReadMessage xmlns=\"http://www.nih.gov\" uid=\"{}\">",
        uid(&[index as u64, 9])
    );
    // Padded UIDs, as in the real download.
    let _ = writeln!(
        x,
        "  <ResponseHeader>\n    <StudyInstanceUID> {study} </StudyInstanceUID>\n    <SeriesInstanceUid>{series}   </SeriesInstanceUid>\n  </ResponseHeader>"
    );
    for reader in 0..4 {
        let _ = writeln!(x, "  <readingSession>\n    <servicingRadiologistID>reader-{reader}</servicingRadiologistID>");
        for (n, e) in nodules.iter().enumerate() {
            if reader == 3 && n == 0 {
                continue;
            }
            let scale = 0.9 + 0.07 * reader as f64;
            let (dr, dc) = (
                rng.uniform(-1.0, 1.0).round(),
                rng.uniform(-1.0, 1.0).round(),
            );
            let malignancy = (1 + (e.radius_rows * 2.0 / 6.0) as i32 + reader % 2).min(5);
            let _ = writeln!(
                x,
                "    <unblindedReadNodule>\n      <noduleID>Nodule {:03}</noduleID>\n      <characteristics>\n        <subtlety>{}</subtlety><internalStructure>1</internalStructure><calcification>6</calcification>\n        <sphericity>{}</sphericity><margin>4</margin><lobulation>2</lobulation><spiculation>1</spiculation><texture>5</texture>\n        <malignancy>{malignancy}</malignancy>\n      </characteristics>",
                n + 1,
                3 + reader % 3,
                4 - reader % 2
            );
            for (k, (sop, z)) in sops.iter().enumerate() {
                let (a, b) = e.radii(k, scale);
                if a < 1.0 || b < 1.0 {
                    continue;
                }
                roi(&mut x, sop, *z, true, &ring(e.row + dr, e.col + dc, a, b));
                report.outlines += usize::from(k == e.k.round() as usize);
                if index == 1 && n == 0 && reader == 0 && k == e.k.round() as usize && a > 4.0 {
                    roi(
                        &mut x,
                        sop,
                        *z,
                        false,
                        &ring(e.row, e.col, a / 3.0, b / 3.0),
                    );
                }
            }
            let _ = writeln!(x, "    </unblindedReadNodule>");
        }
        if reader == 1 {
            let (sop, z) = &sops[sops.len() / 2];
            let _ = writeln!(
                x,
                "    <unblindedReadNodule>\n      <noduleID>small-1</noduleID>"
            );
            roi(&mut x, sop, *z, true, &[(40, 60)]);
            let _ = writeln!(x, "    </unblindedReadNodule>");
        }
        if reader == 2 {
            let (_, z) = &sops[sops.len() / 3];
            let _ = writeln!(
                x,
                "    <nonNodule>\n      <nonNoduleID>nn-1</nonNoduleID>\n      <imageZposition>{z}</imageZposition>\n      <locus><xCoord>30</xCoord><yCoord>50</yCoord></locus>\n    </nonNodule>"
            );
        }
        let _ = writeln!(x, "  </readingSession>");
    }
    let _ = writeln!(x, "</LidcReadMessage>");
    x
}

/// One `roi` element with (row, column) points written as (x, y) = (column, row).
fn roi(x: &mut String, sop: &str, z: f64, inclusion: bool, points: &[(i64, i64)]) {
    let _ = writeln!(
        x,
        "      <roi>\n        <imageZposition>{z}</imageZposition>\n        <imageSOP_UID>{sop} </imageSOP_UID>\n        <inclusion>{}</inclusion>",
        if inclusion { "TRUE" } else { "FALSE" }
    );
    for (r, c) in points {
        let _ = writeln!(
            x,
            "        <edgeMap><xCoord>{c}</xCoord><yCoord>{r}</yCoord></edgeMap>"
        );
    }
    let _ = writeln!(x, "      </roi>");
}
