//! The regular expressions of `like`/`nlike`: a safe subset (literals, `.`, classes `[...]` and
//! `[^...]`, `\d \w \s` and their negations, `* + ?` and their lazy forms, `^` and `$` at the
//! ends), matched by simulating the automaton, so matching is linear in the input and a hostile
//! pattern cannot stall the server. Groups, alternation and counted repetition are refused.

use super::MAX_PATTERN;

/// A regular expression of the supported subset, matched by simulating its automaton (linear in
/// the input, so a hostile pattern cannot stall the server).
#[derive(Clone, Debug, PartialEq)]
pub struct Pattern {
    pieces: Vec<Piece>,
    anchored_start: bool,
    anchored_end: bool,
}

#[derive(Clone, Debug, PartialEq)]
struct Piece {
    atom: Atom,
    repeat: Repeat,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Repeat {
    One,
    Optional,
    Star,
}

#[derive(Clone, Debug, PartialEq)]
enum Atom {
    Char(char),
    Any,
    Class {
        negated: bool,
        items: Vec<ClassItem>,
    },
}

#[derive(Clone, Debug, PartialEq)]
enum ClassItem {
    Range(char, char),
    Digit(bool),
    Word(bool),
    Space(bool),
}

const UNSUPPORTED: &str = "groups, alternation and counted repetition are not supported; use literals, `.`, `[...]`, `\\d \\w \\s`, `* + ?`, `^` and `$`";

impl Pattern {
    pub fn compile(source: &str) -> Result<Pattern, String> {
        let bad = |why: &str| format!("Invalid like pattern {source:?}: {why}.");
        if source.chars().count() > MAX_PATTERN {
            return Err(bad(&format!("longer than {MAX_PATTERN} characters")));
        }
        let mut chars: Vec<char> = source.chars().collect();
        let anchored_start = chars.first() == Some(&'^');
        if anchored_start {
            chars.remove(0);
        }
        let anchored_end = chars.last() == Some(&'$') && !ends_escaped(&chars);
        if anchored_end {
            chars.pop();
        }
        let mut pieces: Vec<Piece> = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            i += 1;
            let atom = match c {
                '.' => Atom::Any,
                '\\' => {
                    let e = *chars.get(i).ok_or_else(|| bad("it ends with `\\`"))?;
                    i += 1;
                    match escape_class(e) {
                        Some(item) => Atom::Class {
                            negated: false,
                            items: vec![item],
                        },
                        None => Atom::Char(escaped_char(e)),
                    }
                }
                '[' => {
                    let (atom, next) = parse_class(&chars, i).ok_or_else(|| bad("unclosed `[`"))?;
                    i = next;
                    atom
                }
                '*' | '+' | '?' => {
                    let last = pieces
                        .last_mut()
                        .ok_or_else(|| bad("a quantifier follows nothing"))?;
                    match (c, last.repeat) {
                        // A lazy quantifier (`*?`) matches the same strings.
                        ('?', Repeat::Star | Repeat::Optional) => {}
                        (_, Repeat::One) => {
                            last.repeat = if c == '?' {
                                Repeat::Optional
                            } else {
                                Repeat::Star
                            };
                            if c == '+' {
                                let once = Piece {
                                    atom: last.atom.clone(),
                                    repeat: Repeat::One,
                                };
                                let at = pieces.len() - 1;
                                pieces.insert(at, once);
                            }
                        }
                        _ => return Err(bad("a quantifier follows a quantifier")),
                    }
                    continue;
                }
                '(' | ')' | '|' | '{' | '}' | '^' | '$' => return Err(bad(UNSUPPORTED)),
                other => Atom::Char(other),
            };
            pieces.push(Piece {
                atom,
                repeat: Repeat::One,
            });
        }
        Ok(Pattern {
            pieces,
            anchored_start,
            anchored_end,
        })
    }

    /// Whether the pattern occurs in `text` (anywhere, unless anchored), without a budget.
    #[cfg(test)]
    pub fn is_match(&self, text: &str) -> bool {
        let mut unlimited = u64::MAX;
        self.is_match_within(text, &mut unlimited).unwrap_or(false)
    }

    /// As [`Pattern::is_match`], taking from `budget` the work it does: per character, one step
    /// for every live automaton state tested (a class costs one per item). Usually few states
    /// are live; `a*a*a*...` keeps them all. `None` when the budget runs out first.
    pub fn is_match_within(&self, text: &str, budget: &mut u64) -> Option<bool> {
        let n = self.pieces.len();
        let mut current = vec![false; n + 1];
        let mut next = vec![false; n + 1];
        let mut live = Vec::with_capacity(n + 1);
        let mut next_live = Vec::with_capacity(n + 1);
        self.add(&mut current, &mut live, 0);
        for c in text.chars() {
            if current[n] && !self.anchored_end {
                return Some(true);
            }
            *budget = budget.checked_sub(1)?;
            for &i in &live {
                let Some(piece) = self.pieces.get(i) else {
                    continue;
                };
                *budget = budget.checked_sub(piece.atom.cost())?;
                if piece.atom.accepts(c) {
                    match piece.repeat {
                        Repeat::Star => self.add(&mut next, &mut next_live, i),
                        Repeat::One | Repeat::Optional => {
                            self.add(&mut next, &mut next_live, i + 1)
                        }
                    }
                }
            }
            if !self.anchored_start {
                self.add(&mut next, &mut next_live, 0);
            }
            for &i in &live {
                current[i] = false;
            }
            live.clear();
            std::mem::swap(&mut current, &mut next);
            std::mem::swap(&mut live, &mut next_live);
        }
        Some(current[n])
    }

    /// Marks state `i` and every state reachable from it without input, listing each newly
    /// marked state in `live`.
    fn add(&self, states: &mut [bool], live: &mut Vec<usize>, mut i: usize) {
        loop {
            if states[i] {
                return;
            }
            states[i] = true;
            live.push(i);
            match self.pieces.get(i) {
                Some(p) if p.repeat != Repeat::One => i += 1,
                _ => return,
            }
        }
    }
}

fn ends_escaped(chars: &[char]) -> bool {
    let backslashes = chars[..chars.len() - 1]
        .iter()
        .rev()
        .take_while(|c| **c == '\\')
        .count();
    backslashes % 2 == 1
}

fn escape_class(e: char) -> Option<ClassItem> {
    match e {
        'd' => Some(ClassItem::Digit(true)),
        'D' => Some(ClassItem::Digit(false)),
        'w' => Some(ClassItem::Word(true)),
        'W' => Some(ClassItem::Word(false)),
        's' => Some(ClassItem::Space(true)),
        'S' => Some(ClassItem::Space(false)),
        _ => None,
    }
}

fn escaped_char(e: char) -> char {
    match e {
        'n' => '\n',
        't' => '\t',
        'r' => '\r',
        other => other,
    }
}

/// Parses a class body starting after `[`; returns the atom and the index after `]`.
fn parse_class(chars: &[char], mut i: usize) -> Option<(Atom, usize)> {
    let negated = chars.get(i) == Some(&'^');
    if negated {
        i += 1;
    }
    let mut items = Vec::new();
    let mut first = true;
    loop {
        let c = *chars.get(i)?;
        i += 1;
        if c == ']' && !first {
            return Some((Atom::Class { negated, items }, i));
        }
        first = false;
        let low = if c == '\\' {
            let e = *chars.get(i)?;
            i += 1;
            if let Some(item) = escape_class(e) {
                items.push(item);
                continue;
            }
            escaped_char(e)
        } else {
            c
        };
        if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|c| *c != ']') {
            let mut high = chars[i + 1];
            i += 2;
            if high == '\\' {
                high = escaped_char(*chars.get(i)?);
                i += 1;
            }
            items.push(ClassItem::Range(low, high));
        } else {
            items.push(ClassItem::Range(low, low));
        }
    }
}

impl Atom {
    /// The steps one test of this atom costs (a class tests each of its items).
    fn cost(&self) -> u64 {
        match self {
            Atom::Class { items, .. } => items.len() as u64 + 1,
            _ => 1,
        }
    }

    fn accepts(&self, c: char) -> bool {
        match self {
            Atom::Char(x) => *x == c,
            Atom::Any => c != '\n',
            Atom::Class { negated, items } => items.iter().any(|i| i.accepts(c)) != *negated,
        }
    }
}

impl ClassItem {
    fn accepts(&self, c: char) -> bool {
        match self {
            ClassItem::Range(low, high) => (*low..=*high).contains(&c),
            ClassItem::Digit(yes) => c.is_ascii_digit() == *yes,
            ClassItem::Word(yes) => (c.is_alphanumeric() || c == '_') == *yes,
            ClassItem::Space(yes) => c.is_whitespace() == *yes,
        }
    }
}
