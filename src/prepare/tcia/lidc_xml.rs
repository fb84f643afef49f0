//! The LIDC readers' XML (`LidcReadMessage`): each reading session's nodule outlines and
//! characteristics. Elements are matched by local name, so the `http://www.nih.gov` namespace (or
//! its absence) does not matter; UIDs and numbers are trimmed.

use roxmltree::{Document, Node};

/// One contour (`roi`) of a nodule outline on one slice.
#[derive(Debug, Clone, PartialEq)]
pub struct Roi {
    /// `imageZposition` (mm).
    pub z: f64,
    /// `imageSOP_UID`, trimmed.
    pub sop_uid: String,
    /// `inclusion`: TRUE adds the inside to the nodule, FALSE cuts it out.
    pub inclusion: bool,
    /// `edgeMap` points as (x, y) = (column, row).
    pub points: Vec<(i32, i32)>,
}

/// A reader's nine ratings of a nodule (`characteristics`); absent ratings are `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Characteristics {
    pub subtlety: Option<i32>,
    pub internal_structure: Option<i32>,
    pub calcification: Option<i32>,
    pub sphericity: Option<i32>,
    pub margin: Option<i32>,
    pub lobulation: Option<i32>,
    pub spiculation: Option<i32>,
    pub texture: Option<i32>,
    pub malignancy: Option<i32>,
}

impl Characteristics {
    /// The element names, in the order of [`Characteristics::values`].
    pub const NAMES: [&'static str; 9] = [
        "subtlety",
        "internalStructure",
        "calcification",
        "sphericity",
        "margin",
        "lobulation",
        "spiculation",
        "texture",
        "malignancy",
    ];

    /// The ratings in [`Characteristics::NAMES`] order.
    pub fn values(&self) -> [Option<i32>; 9] {
        [
            self.subtlety,
            self.internal_structure,
            self.calcification,
            self.sphericity,
            self.margin,
            self.lobulation,
            self.spiculation,
            self.texture,
            self.malignancy,
        ]
    }

    fn set(&mut self, name: &str, value: Option<i32>) {
        let slot = match name {
            "subtlety" => &mut self.subtlety,
            "internalStructure" => &mut self.internal_structure,
            "calcification" => &mut self.calcification,
            "sphericity" => &mut self.sphericity,
            "margin" => &mut self.margin,
            "lobulation" => &mut self.lobulation,
            "spiculation" => &mut self.spiculation,
            "texture" => &mut self.texture,
            "malignancy" => &mut self.malignancy,
            _ => return,
        };
        *slot = value;
    }
}

/// One `unblindedReadNodule`.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadNodule {
    /// `noduleID`, trimmed (unique within a reading session only).
    pub nodule_id: String,
    /// `characteristics`; `None` for nodules under 3 mm, which have none.
    pub characteristics: Option<Characteristics>,
    /// The contours, in document order.
    pub rois: Vec<Roi>,
    /// Contours without a readable `imageZposition` and edge points whose coordinates are not
    /// integers: left out (and reported).
    pub unreadable: usize,
}

impl ReadNodule {
    /// Whether the reader drew an outline (a nodule of 3 mm or more), not a single point: only
    /// these give masks.
    pub fn is_outlined(&self) -> bool {
        self.characteristics.is_some() && self.rois.iter().any(|r| r.points.len() > 1)
    }
}

/// One `readingSession`: one radiologist's reading.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReadingSession {
    /// `servicingRadiologistID`, when given.
    pub radiologist: Option<String>,
    /// The nodules the reader marked.
    pub nodules: Vec<ReadNodule>,
    /// `nonNodule` marks (single points; no mask).
    pub non_nodules: usize,
}

/// A parsed `LidcReadMessage`.
#[derive(Debug, Clone, PartialEq)]
pub struct LidcRead {
    /// `ResponseHeader/SeriesInstanceUid`, trimmed.
    pub series_uid: String,
    /// `ResponseHeader/StudyInstanceUID`, trimmed; empty when absent.
    pub study_uid: String,
    /// The reading sessions, in document order: session r is rater r.
    pub sessions: Vec<ReadingSession>,
}

/// What an XML file of the LIDC download is.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadMessage {
    /// A CT reading.
    Ct(LidcRead),
    /// A chest X-ray reading (`IdriReadMessage`): skipped and counted.
    ChestXray,
}

/// Why an XML file could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    /// Not well-formed XML.
    #[error("not well-formed XML: {0}")]
    Malformed(String),
    /// Well-formed but not an LIDC reading.
    #[error("{0}")]
    NotLidc(String),
}

/// The most XML nodes one reading may have (the largest LIDC reading has ~100,000), so that a
/// hostile file cannot build a tree of millions of nodes.
const MAX_NODES: u32 = 4_000_000;

/// Parses one XML file's text.
pub fn parse(text: &str) -> Result<ReadMessage, XmlError> {
    let options = roxmltree::ParsingOptions {
        nodes_limit: MAX_NODES,
        ..roxmltree::ParsingOptions::default()
    };
    let doc = Document::parse_with_options(text, options)
        .map_err(|e| XmlError::Malformed(e.to_string()))?;
    let root = doc.root_element();
    match root.tag_name().name() {
        "LidcReadMessage" => {}
        "IdriReadMessage" => return Ok(ReadMessage::ChestXray),
        other => {
            return Err(XmlError::NotLidc(format!(
                "root element <{other}> is neither LidcReadMessage nor IdriReadMessage"
            )))
        }
    }
    let header = child(root, "ResponseHeader");
    let series_uid = header
        .and_then(|h| child_text(h, "SeriesInstanceUid"))
        .unwrap_or_default();
    if series_uid.is_empty() {
        return Err(XmlError::NotLidc(
            "no ResponseHeader/SeriesInstanceUid".into(),
        ));
    }
    let study_uid = header
        .and_then(|h| child_text(h, "StudyInstanceUID"))
        .unwrap_or_default();
    let sessions = children(root, "readingSession").map(session).collect();
    Ok(ReadMessage::Ct(LidcRead {
        series_uid,
        study_uid,
        sessions,
    }))
}

fn session(node: Node<'_, '_>) -> ReadingSession {
    ReadingSession {
        radiologist: child_text(node, "servicingRadiologistID").filter(|s| !s.is_empty()),
        nodules: children(node, "unblindedReadNodule").map(nodule).collect(),
        non_nodules: children(node, "nonNodule").count(),
    }
}

fn nodule(node: Node<'_, '_>) -> ReadNodule {
    let characteristics = child(node, "characteristics").map(|c| {
        let mut ch = Characteristics::default();
        for name in Characteristics::NAMES {
            ch.set(name, child_text(c, name).and_then(|t| t.parse().ok()));
        }
        ch
    });
    let mut unreadable = 0;
    let mut rois = Vec::new();
    for r in children(node, "roi") {
        match roi(r) {
            Some((roi, bad_points)) => {
                unreadable += bad_points;
                rois.push(roi);
            }
            None => unreadable += 1,
        }
    }
    ReadNodule {
        nodule_id: child_text(node, "noduleID").unwrap_or_default(),
        characteristics,
        rois,
        unreadable,
    }
}

/// A contour and the count of its edge points that are not integer coordinates; `None` when its
/// z is missing or not a number.
fn roi(node: Node<'_, '_>) -> Option<(Roi, usize)> {
    let z = child_text(node, "imageZposition")?.parse().ok()?;
    let mut bad = 0;
    let points = children(node, "edgeMap")
        .filter_map(|e| {
            let point = (|| {
                let x = child_text(e, "xCoord")?.parse().ok()?;
                let y = child_text(e, "yCoord")?.parse().ok()?;
                Some((x, y))
            })();
            bad += usize::from(point.is_none());
            point
        })
        .collect();
    let roi = Roi {
        z,
        sop_uid: child_text(node, "imageSOP_UID").unwrap_or_default(),
        inclusion: child_text(node, "inclusion").is_none_or(|t| !t.eq_ignore_ascii_case("false")),
        points,
    };
    Some((roi, bad))
}

fn children<'a, 'input>(
    node: Node<'a, 'input>,
    name: &'static str,
) -> impl Iterator<Item = Node<'a, 'input>> {
    node.children()
        .filter(move |c| c.is_element() && c.tag_name().name() == name)
}

fn child<'a, 'input>(node: Node<'a, 'input>, name: &'static str) -> Option<Node<'a, 'input>> {
    children(node, name).next()
}

/// The trimmed text of the first child element `name` (UIDs in the download carry padding).
fn child_text(node: Node<'_, '_>, name: &'static str) -> Option<String> {
    child(node, name).map(|c| {
        c.text()
            .unwrap_or("")
            .trim_matches(|c: char| c.is_whitespace() || c == '\0')
            .to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<LidcReadMessage xmlns="http://www.nih.gov" uid="1.3.6.1.4.1.14519.5.2.1.6279.6001.1">
  <ResponseHeader>
    <StudyInstanceUID> 1.2.3 </StudyInstanceUID>
    <SeriesInstanceUid>1.2.3.4  </SeriesInstanceUid>
  </ResponseHeader>
  <readingSession>
    <servicingRadiologistID>anon</servicingRadiologistID>
    <unblindedReadNodule>
      <noduleID> Nodule 001 </noduleID>
      <characteristics>
        <subtlety>5</subtlety><internalStructure>1</internalStructure>
        <calcification>6</calcification><sphericity>3</sphericity><margin>3</margin>
        <lobulation>3</lobulation><spiculation>4</spiculation><texture>5</texture>
        <malignancy> 5 </malignancy>
      </characteristics>
      <roi>
        <imageZposition>-125.000000 </imageZposition>
        <imageSOP_UID>1.2.3.4.5 </imageSOP_UID>
        <inclusion>TRUE</inclusion>
        <edgeMap><xCoord>312</xCoord><yCoord>358</yCoord></edgeMap>
        <edgeMap><xCoord>311</xCoord><yCoord>359</yCoord></edgeMap>
        <edgeMap><xCoord>310</xCoord><yCoord>358</yCoord></edgeMap>
      </roi>
      <roi>
        <imageZposition>-125.0</imageZposition>
        <imageSOP_UID>1.2.3.4.5</imageSOP_UID>
        <inclusion>FALSE</inclusion>
        <edgeMap><xCoord>311</xCoord><yCoord>358</yCoord></edgeMap>
      </roi>
    </unblindedReadNodule>
    <unblindedReadNodule>
      <noduleID>small</noduleID>
      <roi>
        <imageZposition>-130</imageZposition><imageSOP_UID>1.2.3.4.6</imageSOP_UID>
        <inclusion>TRUE</inclusion>
        <edgeMap><xCoord>100</xCoord><yCoord>101</yCoord></edgeMap>
      </roi>
    </unblindedReadNodule>
    <nonNodule><nonNoduleID>x</nonNoduleID><imageZposition>-1</imageZposition>
      <locus><xCoord>1</xCoord><yCoord>2</yCoord></locus></nonNodule>
  </readingSession>
  <readingSession><unblindedReadNodule><noduleID>2</noduleID></unblindedReadNodule></readingSession>
</LidcReadMessage>"#;

    #[test]
    fn reads_sessions_nodules_and_contours_by_local_name_with_trimming() {
        let ReadMessage::Ct(read) = parse(SAMPLE).unwrap() else {
            panic!("not a CT reading")
        };
        assert_eq!(read.series_uid, "1.2.3.4");
        assert_eq!(read.study_uid, "1.2.3");
        assert_eq!(read.sessions.len(), 2);
        let s = &read.sessions[0];
        assert_eq!(s.radiologist.as_deref(), Some("anon"));
        assert_eq!(s.non_nodules, 1);
        assert_eq!(s.nodules.len(), 2);
        let n = &s.nodules[0];
        assert_eq!(n.nodule_id, "Nodule 001");
        let ch = n.characteristics.unwrap();
        assert_eq!(ch.malignancy, Some(5));
        assert_eq!(ch.internal_structure, Some(1));
        assert_eq!(n.rois.len(), 2);
        assert_eq!(n.rois[0].z, -125.0);
        assert_eq!(n.rois[0].sop_uid, "1.2.3.4.5");
        assert!(n.rois[0].inclusion);
        assert!(!n.rois[1].inclusion);
        assert_eq!(n.rois[0].points, vec![(312, 358), (311, 359), (310, 358)]);
        assert!(n.is_outlined());
        // A nodule under 3 mm: one point, no characteristics, no mask.
        assert!(!s.nodules[1].is_outlined());
        assert!(!read.sessions[1].nodules[0].is_outlined());
    }

    #[test]
    fn chest_xray_readings_are_recognised_and_junk_is_an_error() {
        assert_eq!(
            parse("<IdriReadMessage xmlns='http://www.nih.gov'/>").unwrap(),
            ReadMessage::ChestXray
        );
        assert!(matches!(
            parse("<LidcReadMessage><unclosed>"),
            Err(XmlError::Malformed(_))
        ));
        assert!(matches!(parse("<html/>"), Err(XmlError::NotLidc(_))));
        assert!(matches!(
            parse("<LidcReadMessage><ResponseHeader/></LidcReadMessage>"),
            Err(XmlError::NotLidc(_))
        ));
    }
}
