//! Field path → line/column in the original text.
//!
//! `serde_yaml` keeps no positions in its `Value` tree, but its streaming
//! deserializer stamps the current node's position on any error raised while
//! that node is being read. So to find `routes[2].require[0].any_of`, we walk
//! the document along that path, skipping everything else, and raise a marker
//! error on arrival: the error's location is the node's. For a final mapping
//! key the error is raised on the key itself, so the column points at
//! `any_of:` rather than at its value.
//!
//! The walk reads the file text as written, which is why `${VAR}` expansion
//! (done on the parsed tree, never on the text) cannot shift any position.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::error::{FieldPath, Location, Segment};

const MARKER: &str = "\u{0}wsgate-locate:";

/// The position of the node at `path`, or of its deepest ancestor present in
/// the text (a missing key is reported where its mapping is). `None` for the
/// document root, or when the text does not parse.
pub fn locate(text: &str, path: &FieldPath) -> Option<Location> {
    if path.is_root() {
        return None;
    }
    let de = serde_yaml::Deserializer::from_str(text);
    let err = match (Probe {
        rest: path.segments(),
        depth: 0,
    })
    .deserialize(de)
    {
        Ok(()) => return None,
        Err(e) => e,
    };
    let message = err.to_string();
    // serde_yaml prefixes the message with its own path, hence `find`.
    let depth: usize = message[message.find(MARKER)? + MARKER.len()..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    // Depth 0 is the root mapping: pointing at line 1 would only mislead.
    if depth == 0 {
        return None;
    }
    let loc = err.location()?;
    Some(Location {
        line: loc.line(),
        column: loc.column(),
    })
}

fn found<E: de::Error>(depth: usize) -> E {
    E::custom(format!("{MARKER}{depth}"))
}

/// Walks towards `rest`; on arrival (or when the path leaves the document)
/// fails with the marker error, stamped by serde_yaml with the node's position.
struct Probe<'p> {
    rest: &'p [Segment],
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Probe<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Probe<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML node")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((Segment::Index(target), rest)) = self.rest.split_first() else {
            return Err(found(self.depth));
        };
        let mut i = 0;
        while i < *target {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Err(found(self.depth));
            }
            i += 1;
        }
        let child = Probe {
            rest,
            depth: self.depth + 1,
        };
        match seq.next_element_seed(child)? {
            // `Probe` only returns Ok when it is not on the path, which cannot
            // happen for the element we descended into; treat as not found.
            Some(()) | None => Err(found(self.depth)),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((Segment::Key(target), rest)) = self.rest.split_first() else {
            return Err(found(self.depth));
        };
        let key_seed = || KeyMatch {
            target,
            // On the last segment, stop at the key itself.
            stop_depth: rest.is_empty().then_some(self.depth + 1),
        };
        while let Some(matched) = map.next_key_seed(key_seed())? {
            if matched {
                map.next_value_seed(Probe {
                    rest,
                    depth: self.depth + 1,
                })?;
                return Err(found(self.depth));
            }
            map.next_value::<IgnoredAny>()?;
        }
        Err(found(self.depth))
    }

    // Any scalar: the path goes deeper than the document.
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(found(self.depth))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(found(self.depth))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(found(self.depth))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(found(self.depth))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(found(self.depth))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(found(self.depth))
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Err(found(self.depth))
    }
}

/// Reads one mapping key: `Ok(true)` when it is the one we look for, or the
/// marker error when it is and the walk ends at this key.
struct KeyMatch<'p> {
    target: &'p str,
    stop_depth: Option<usize>,
}

impl<'de> DeserializeSeed<'de> for KeyMatch<'_> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeyMatch<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        match (v == self.target, self.stop_depth) {
            (true, Some(depth)) => Err(found(depth)),
            (matched, _) => Ok(matched),
        }
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<bool, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<bool, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
        self.visit_str(if v { "true" } else { "false" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
listeners:
  - bind: 1.2.3.4:80
routes:
  - id: a
    require:
      - { claim: x, any_of: [y] }
  - id: b
    require:
      - claim: roles
        any_of:
          - admin
";

    fn at(path: FieldPath) -> Option<(usize, usize)> {
        locate(DOC, &path).map(|l| (l.line, l.column))
    }

    #[test]
    fn finds_keys_and_items() {
        let r = FieldPath::root().key("routes");
        assert_eq!(at(r.clone()), Some((3, 1)));
        assert_eq!(at(r.index(1)), Some((7, 5)));
        assert_eq!(
            at(r.index(1).key("require").index(0).key("any_of")),
            Some((10, 9))
        );
        assert_eq!(
            at(r.index(1).key("require").index(0).key("any_of").index(0)),
            Some((11, 13))
        );
        assert_eq!(
            at(r.index(0).key("require").index(0).key("any_of")),
            Some((6, 21))
        );
        assert_eq!(
            at(FieldPath::root().key("listeners").index(0).key("bind")),
            Some((2, 5))
        );
    }

    #[test]
    fn missing_nodes_point_at_the_deepest_ancestor() {
        let r = FieldPath::root().key("routes");
        assert_eq!(at(r.index(0).key("upstream")), Some((4, 5)));
        assert_eq!(at(r.index(7)), Some((4, 3)));
        assert_eq!(at(FieldPath::root().key("nothing")), None);
        assert_eq!(at(FieldPath::root()), None);
        assert_eq!(locate("a: [", &FieldPath::root().key("b")), None);
    }
}
