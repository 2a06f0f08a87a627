//! Parsing and validating a script: every line is checked (arity, names, kinds, ranges) before
//! any runs, so an invalid script prints nothing.

use std::collections::HashMap;
use std::io::BufRead;

const MAX_OFFSET_MS: i64 = 100_000_000_000;
const MAX_SLEEP_MS: i64 = 600_000;

pub(super) struct Op {
    pub(super) line: usize,
    pub(super) name: String,
    pub(super) args: Vec<String>,
}

impl Op {
    pub(super) fn text(&self) -> String {
        std::iter::once(self.name.as_str())
            .chain(self.args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_word(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "_.:/-".contains(c))
}

pub(super) fn parse_offset(s: &str) -> Result<i64, String> {
    match s.parse::<i64>() {
        Ok(n) if (-MAX_OFFSET_MS..=MAX_OFFSET_MS).contains(&n) => Ok(n),
        _ => Err(format!("bad offset {s:?}")),
    }
}

const CANCELLABLE: &[&str] = &[
    "with_cancel",
    "with_cancel_cause",
    "with_deadline",
    "with_deadline_cause",
    "with_timeout",
    "with_timeout_cause",
];

fn validate(op: &Op, kinds: &mut HashMap<String, String>) -> Result<(), String> {
    let a = &op.args;
    let nargs = |ns: &[usize]| {
        if ns.contains(&a.len()) { Ok(()) } else { Err(format!("wrong number of arguments ({})", a.len())) }
    };
    let new_id = |id: &str, kinds: &HashMap<String, String>| {
        if !is_ident(id) {
            Err(format!("bad id {id:?}"))
        } else if kinds.contains_key(id) {
            Err(format!("id {id:?} already defined"))
        } else {
            Ok(())
        }
    };
    let ctx_ref = |id: &str, kinds: &HashMap<String, String>| match kinds.get(id) {
        Some(k) if k != "after_func" => Ok(()),
        _ => Err(format!("unknown context {id:?}")),
    };
    let cancel_ref = |id: &str, kinds: &HashMap<String, String>| {
        ctx_ref(id, kinds)?;
        if CANCELLABLE.contains(&kinds[id].as_str()) {
            Ok(())
        } else {
            Err(format!("context {id:?} ({}) has no cancel function", kinds[id]))
        }
    };
    let cause_tok = |s: &str| {
        if matches!(s, "nil" | "canceled" | "deadline_exceeded") || (is_ident(s) && s != "none") {
            Ok(())
        } else {
            Err(format!("bad cause {s:?}"))
        }
    };
    let word = |s: &str| if is_word(s) { Ok(()) } else { Err(format!("bad key/value {s:?}")) };
    match op.name.as_str() {
        "note" => {}
        "background" | "todo" => {
            nargs(&[1])?;
            new_id(&a[0], kinds)?;
        }
        "with_cancel" | "with_cancel_cause" | "without_cancel" => {
            nargs(&[2])?;
            new_id(&a[0], kinds)?;
            ctx_ref(&a[1], kinds)?;
        }
        "with_deadline" | "with_timeout" => {
            nargs(&[3])?;
            new_id(&a[0], kinds)?;
            ctx_ref(&a[1], kinds)?;
            parse_offset(&a[2])?;
        }
        "with_deadline_cause" | "with_timeout_cause" => {
            nargs(&[4])?;
            new_id(&a[0], kinds)?;
            ctx_ref(&a[1], kinds)?;
            parse_offset(&a[2])?;
            cause_tok(&a[3])?;
        }
        "with_value" => {
            nargs(&[4])?;
            new_id(&a[0], kinds)?;
            ctx_ref(&a[1], kinds)?;
            word(&a[2])?;
            word(&a[3])?;
        }
        "with_value_nil" => {
            nargs(&[3])?;
            new_id(&a[0], kinds)?;
            ctx_ref(&a[1], kinds)?;
            word(&a[2])?;
        }
        "cancel" => {
            nargs(&[1, 2])?;
            cancel_ref(&a[0], kinds)?;
            if a.len() == 2 {
                if kinds[&a[0]] != "with_cancel_cause" {
                    return Err("a cause can only be given to a with_cancel_cause context".into());
                }
                cause_tok(&a[1])?;
            }
        }
        "after_func" => {
            nargs(&[2, 4])?;
            new_id(&a[0], kinds)?;
            ctx_ref(&a[1], kinds)?;
            if a.len() == 4 {
                match a[2].as_str() {
                    "cancel" => cancel_ref(&a[3], kinds)?,
                    "cancel_cause" => {
                        cancel_ref(&a[3], kinds)?;
                        if kinds[&a[3]] != "with_cancel_cause" {
                            return Err("cancel_cause target must be a with_cancel_cause context".into());
                        }
                    }
                    other => return Err(format!("unknown after_func action {other:?}")),
                }
            }
        }
        "stop" => {
            nargs(&[1])?;
            if kinds.get(&a[0]).map(String::as_str) != Some("after_func") {
                return Err(format!("unknown after_func {:?}", a[0]));
            }
        }
        "sleep" => {
            nargs(&[1])?;
            match a[0].parse::<i64>() {
                Ok(n) if (0..=MAX_SLEEP_MS).contains(&n) => {}
                _ => return Err(format!("bad sleep {:?}", a[0])),
            }
        }
        "check" => a.iter().try_for_each(|k| word(k))?,
        "errtext" => {
            nargs(&[1])?;
            ctx_ref(&a[0], kinds)?;
        }
        _ => return Err("unknown op".into()),
    }
    match op.name.as_str() {
        "note" | "cancel" | "stop" | "sleep" | "check" | "errtext" => {}
        "after_func" => {
            kinds.insert(a[0].clone(), "after_func".into());
        }
        other => {
            kinds.insert(a[0].clone(), other.into());
        }
    }
    Ok(())
}

pub(super) fn parse(input: impl BufRead) -> Result<Vec<Op>, String> {
    let mut kinds = HashMap::new();
    let mut ops = Vec::new();
    for (i, line) in input.lines().enumerate() {
        let line = line.map_err(|e| e.to_string())?;
        let text = line.split('#').next().unwrap_or("");
        let mut fields = text.split_whitespace().map(String::from);
        let Some(name) = fields.next() else { continue };
        let op = Op { line: i + 1, name, args: fields.collect() };
        validate(&op, &mut kinds).map_err(|e| format!("line {}: {:?}: {e}", op.line, op.text()))?;
        ops.push(op);
    }
    Ok(ops)
}
