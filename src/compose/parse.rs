//! YAML text → a [`Node`] tree, bounded.
//!
//! A compose file is small, but it is read from disk and may be hostile: the YAML "billion
//! laughs" (anchors whose aliases nest, `a: &a [x, x]`, `b: &b [*a, *a]`, …) expands a few
//! hundred bytes into billions of nodes, and an unbalanced `[[[[…` nests deep enough to blow the
//! stack when the tree is dropped. So the tree is built here from the parser's events, with a
//! budget: at most [`MAX_NODES`] nodes in all, aliases counted at their expanded size before they
//! are copied, and at most [`MAX_DEPTH`] levels. Compose files use anchors and merge keys
//! (`<<: *defaults`) in earnest, so aliases are expanded, not refused.
//!
//! Every scalar stays text (`5433:5432` is not a YAML 1.1 base-60 number, `16` not an integer):
//! compose itself reads them as the strings they are written as. A plain `null`, `~` or nothing is
//! [`Node::Null`].

use std::collections::HashMap;
use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::TScalarStyle;

/// The most nodes one compose file may expand to (aliases counted at their expanded size).
pub const MAX_NODES: usize = 100_000;
/// The deepest nesting of sequences and mappings.
pub const MAX_DEPTH: usize = 64;

/// A YAML value, every scalar as its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Null,
    Scalar(String),
    Seq(Vec<Node>),
    /// Entries in file order; merge keys (`<<`) already applied.
    Map(Vec<(String, Node)>),
}

impl Node {
    /// The value at `key` of a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The scalar's text.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Node::Scalar(text) => Some(text),
            _ => None,
        }
    }

    /// How many nodes this one is, itself included.
    fn size(&self) -> usize {
        match self {
            Node::Null | Node::Scalar(_) => 1,
            Node::Seq(items) => 1 + items.iter().map(Node::size).sum::<usize>(),
            Node::Map(entries) => 1 + entries.iter().map(|(_, v)| v.size() + 1).sum::<usize>(),
        }
    }
}

/// A collection being built: its anchor, and its items (a mapping's alternate key, value).
struct Open {
    anchor: usize,
    map: bool,
    items: Vec<Node>,
}

/// Parses `text` (one YAML document; an empty one is [`Node::Null`]).
pub fn parse(text: &str) -> Result<Node, String> {
    let mut parser = Parser::new_from_str(text);
    let mut stack: Vec<Open> = Vec::new();
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    let mut built = 0usize;
    let mut root: Option<Node> = None;
    loop {
        let (event, mark) = parser.next_token().map_err(|e| e.to_string())?;
        let at = || format!("line {}", mark.line());
        let (node, anchor) = match event {
            Event::StreamEnd => break,
            Event::DocumentStart => {
                if root.is_some() {
                    return Err(format!(
                        "a second YAML document at {}: a compose file is one document",
                        at()
                    ));
                }
                continue;
            }
            Event::Nothing | Event::StreamStart | Event::DocumentEnd => continue,
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(format!(
                        "nested more than {MAX_DEPTH} levels deep at {}",
                        at()
                    ));
                }
                let map = matches!(event, Event::MappingStart(..));
                stack.push(Open {
                    anchor,
                    map,
                    items: Vec::new(),
                });
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let open = stack.pop().ok_or("unbalanced YAML events")?;
                let node = if open.map {
                    Node::Map(mapping(open.items, &at())?)
                } else {
                    Node::Seq(open.items)
                };
                (node, open.anchor)
            }
            Event::Scalar(text, style, anchor, _) => {
                let null = style == TScalarStyle::Plain
                    && matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL");
                (if null { Node::Null } else { Node::Scalar(text) }, anchor)
            }
            Event::Alias(id) => {
                let node = anchors
                    .get(&id)
                    .ok_or_else(|| format!("an alias to an unknown anchor at {}", at()))?;
                built = built.saturating_add(node.size());
                if built > MAX_NODES {
                    return Err(bomb());
                }
                (node.clone(), 0)
            }
        };
        built += 1;
        if built > MAX_NODES {
            return Err(bomb());
        }
        if anchor != 0 {
            // Kept for later aliases: counted like the copy it is.
            built = built.saturating_add(node.size());
            if built > MAX_NODES {
                return Err(bomb());
            }
            anchors.insert(anchor, node.clone());
        }
        match stack.last_mut() {
            Some(open) => open.items.push(node),
            None => root = Some(node),
        }
    }
    Ok(root.unwrap_or(Node::Null))
}

fn bomb() -> String {
    format!(
        "it expands to more than {MAX_NODES} YAML nodes (anchors and aliases nesting, a \"billion laughs\"); \
         no compose file needs that many"
    )
}

/// A mapping's alternating keys and values, with merge keys (`<<: *a` or `<<: [*a, *b]`)
/// applied: explicit keys win, then the merged mappings in order.
fn mapping(items: Vec<Node>, at: &str) -> Result<Vec<(String, Node)>, String> {
    let mut entries: Vec<(String, Node)> = Vec::new();
    let mut merged: Vec<(String, Node)> = Vec::new();
    let mut items = items.into_iter();
    while let (Some(key), Some(value)) = (items.next(), items.next()) {
        let key = match key {
            Node::Scalar(key) => key,
            Node::Null => String::new(),
            _ => return Err(format!("a mapping key that is not text, before {at}")),
        };
        if key == "<<" {
            let sources = match value {
                Node::Seq(sources) => sources,
                other => vec![other],
            };
            for source in sources {
                let Node::Map(source) = source else {
                    return Err(format!(
                        "a merge key (<<) whose value is not a mapping, before {at}"
                    ));
                };
                for (k, v) in source {
                    if !merged.iter().any(|(m, _)| *m == k) {
                        merged.push((k, v));
                    }
                }
            }
            continue;
        }
        if entries.iter().any(|(k, _)| *k == key) {
            return Err(format!(
                "the key {key:?} appears twice in one mapping, before {at}"
            ));
        }
        entries.push((key, value));
    }
    for (k, v) in merged {
        if !entries.iter().any(|(e, _)| *e == k) {
            entries.push((k, v));
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> Node {
        Node::Scalar(text.to_string())
    }

    #[test]
    fn scalars_stay_text_and_plain_nulls_are_null() {
        let node = parse("a: 5433:5432\nb: 16\nc:\nd: '~'\ne: ~\n").unwrap();
        assert_eq!(node.get("a"), Some(&s("5433:5432")));
        assert_eq!(node.get("b"), Some(&s("16")));
        assert_eq!(node.get("c"), Some(&Node::Null));
        assert_eq!(node.get("d"), Some(&s("~")));
        assert_eq!(node.get("e"), Some(&Node::Null));
    }

    #[test]
    fn anchors_and_merge_keys_expand_with_explicit_keys_winning() {
        let text = "x: &env {A: '1', B: '2'}\ny:\n  <<: *env\n  B: '3'\nz: *env\n";
        let node = parse(text).unwrap();
        let y = node.get("y").unwrap();
        assert_eq!(y.get("A"), Some(&s("1")));
        assert_eq!(y.get("B"), Some(&s("3")));
        assert_eq!(node.get("z").unwrap().get("A"), Some(&s("1")));
    }

    #[test]
    fn a_billion_laughs_is_refused_without_expanding_it() {
        let mut text = String::from("a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for (name, prev) in ["b", "c", "d", "e", "f", "g", "h", "i"]
            .iter()
            .zip(["a", "b", "c", "d", "e", "f", "g", "h"])
        {
            let refs = vec![format!("*{prev}"); 9].join(", ");
            text.push_str(&format!("{name}: &{name} [{refs}]\n"));
        }
        let err = parse(&text).unwrap_err();
        assert!(err.contains("billion laughs"), "{err}");
    }

    #[test]
    fn deep_nesting_is_refused() {
        let err = parse(&"[".repeat(100)).unwrap_err();
        assert!(err.contains("levels deep"), "{err}");
        assert!(parse(&"[".repeat(100_000)).is_err());
    }

    #[test]
    fn duplicate_keys_and_second_documents_are_refused() {
        assert!(parse("a: 1\na: 2\n").unwrap_err().contains("twice"));
        assert!(
            parse("a: 1\n---\nb: 2\n")
                .unwrap_err()
                .contains("second YAML document")
        );
    }
}
