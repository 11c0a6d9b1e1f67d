//! The S-expression subset Core's Nfs_lock writes and reads (sexplib's rules).
//!
//! Writing produces sexplib's machine form byte for byte: atoms are quoted only when
//! sexplib would quote them, and a space separates two adjacent atoms only when both
//! are written unquoted. Reading accepts the machine and the human form (any white
//! space, line breaks inside quoted atoms, `;` comments), since Core wrote both.

/// A parsed S-expression. Atoms are bytes: lock messages need not be UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sexp {
    Atom(Vec<u8>),
    List(Vec<Sexp>),
}

impl Sexp {
    pub fn atom(bytes: impl Into<Vec<u8>>) -> Sexp {
        Sexp::Atom(bytes.into())
    }

    pub fn list(items: impl Into<Vec<Sexp>>) -> Sexp {
        Sexp::List(items.into())
    }

    /// The machine form, exactly as sexplib's `to_string_mach` prints it.
    pub fn to_machine(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(96);
        self.write_machine(&mut out, false);
        out
    }

    /// Appends this expression; `space_before_plain` says whether the previous output
    /// was an unquoted atom. Returns whether this output ends with an unquoted atom.
    fn write_machine(&self, out: &mut Vec<u8>, space_before_plain: bool) -> bool {
        match self {
            Sexp::Atom(a) if must_quote(a) => {
                write_quoted(a, out);
                false
            }
            Sexp::Atom(a) => {
                if space_before_plain {
                    out.push(b' ');
                }
                out.extend_from_slice(a);
                true
            }
            Sexp::List(items) => {
                out.push(b'(');
                let mut plain = false;
                for item in items {
                    plain = item.write_machine(out, plain);
                }
                out.push(b')');
                false
            }
        }
    }
}

/// sexplib's `must_escape`: empty atoms, white space, control and non-ASCII bytes, the
/// syntax characters `"();\`, and the block-comment markers `#|` and `|#`.
fn must_quote(a: &[u8]) -> bool {
    a.is_empty()
        || a.iter().any(|&b| b <= b' ' || b >= 127 || matches!(b, b'"' | b'(' | b')' | b';' | b'\\'))
        || a.windows(2).any(|w| w == b"#|" || w == b"|#")
}

/// sexplib's escaping: `\" \\ \n \t \r \b`, printable ASCII as is, any other byte as a
/// three-digit decimal escape.
fn write_quoted(a: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    for &b in a {
        match b {
            b'"' | b'\\' => out.extend_from_slice(&[b'\\', b]),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\r' => out.extend_from_slice(b"\\r"),
            8 => out.extend_from_slice(b"\\b"),
            b' '..=b'~' => out.push(b),
            _ => {
                out.push(b'\\');
                out.extend_from_slice(format!("{b:03}").as_bytes());
            }
        }
    }
    out.push(b'"');
}

/// Why a text is not one S-expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

/// Parses exactly one S-expression, with optional white space and comments around it.
pub fn parse(text: &[u8]) -> Result<Sexp, ParseError> {
    let mut p = Parser { s: text, i: 0, depth: 0, values: 0 };
    p.skip_blank();
    let value = p.value()?;
    p.skip_blank();
    if p.i != text.len() {
        return Err(p.error("text after the expression"));
    }
    Ok(value)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    depth: usize,
    /// Values read so far (atoms and lists).
    values: usize,
}

/// Records are a few levels deep; anything deeper is not a record and must not be
/// allowed to exhaust the stack.
const MAX_DEPTH: usize = 32;
/// A Core record has about 13 values; unknown fields are allowed, but a tree of many
/// thousands of tiny values would cost some 50 bytes of memory per input byte, so the
/// memory a reader spends stays bounded by a small multiple of the input cap.
const MAX_VALUES: usize = 1024;

impl Parser<'_> {
    fn error(&self, what: &str) -> ParseError {
        ParseError(format!("{what} at byte {}", self.i))
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip_blank(&mut self) {
        while let Some(b) = self.peek() {
            match b {
                b' ' | b'\t' | b'\n' | b'\r' | 0x0c => self.i += 1,
                b';' => {
                    while !matches!(self.peek(), None | Some(b'\n')) {
                        self.i += 1;
                    }
                }
                _ => break,
            }
        }
    }

    fn value(&mut self) -> Result<Sexp, ParseError> {
        self.values += 1;
        if self.values > MAX_VALUES {
            return Err(self.error(&format!("more than {MAX_VALUES} values")));
        }
        match self.peek() {
            None => Err(self.error("unexpected end")),
            Some(b'(') => self.list(),
            Some(b')') => Err(self.error("unbalanced ')'")),
            Some(b'"') => self.quoted(),
            Some(_) => self.plain(),
        }
    }

    fn list(&mut self) -> Result<Sexp, ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error("nested too deeply"));
        }
        self.i += 1;
        let mut items = Vec::new();
        loop {
            self.skip_blank();
            match self.peek() {
                None => return Err(self.error("unclosed '('")),
                Some(b')') => {
                    self.i += 1;
                    self.depth -= 1;
                    return Ok(Sexp::List(items));
                }
                Some(_) => items.push(self.value()?),
            }
        }
    }

    fn plain(&mut self) -> Result<Sexp, ParseError> {
        let start = self.i;
        while let Some(b) = self.peek() {
            if b <= b' ' || matches!(b, b'(' | b')' | b'"' | b';') {
                break;
            }
            self.i += 1;
        }
        let atom = &self.s[start..self.i];
        if atom.is_empty() {
            // A control byte that is neither white space nor part of an atom: stopping
            // here without consuming it would read empty atoms forever.
            return Err(self.error("a control byte where an atom should be"));
        }
        if atom.windows(2).any(|w| w == b"#|" || w == b"|#" || w == b"#;") {
            return Err(self.error("comment marker inside an atom"));
        }
        Ok(Sexp::Atom(atom.to_vec()))
    }

    fn quoted(&mut self) -> Result<Sexp, ParseError> {
        self.i += 1;
        let mut out = Vec::new();
        loop {
            let Some(b) = self.peek() else { return Err(self.error("unclosed '\"'")) };
            self.i += 1;
            match b {
                b'"' => return Ok(Sexp::Atom(out)),
                b'\\' => self.escape(&mut out)?,
                _ => out.push(b),
            }
        }
    }

    /// One escape after a backslash, as sexplib's lexer reads it.
    fn escape(&mut self, out: &mut Vec<u8>) -> Result<(), ParseError> {
        let Some(b) = self.peek() else { return Err(self.error("unclosed '\"'")) };
        self.i += 1;
        match b {
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'b' => out.push(8),
            b'"' | b'\\' | b'\'' | b' ' => out.push(b),
            b'\n' | b'\r' => {
                // A line continuation: the break and the next line's indentation vanish.
                if b == b'\r' && self.peek() == Some(b'\n') {
                    self.i += 1;
                }
                while matches!(self.peek(), Some(b' ' | b'\t')) {
                    self.i += 1;
                }
            }
            b'0'..=b'9' => {
                let digits = self.s.get(self.i - 1..self.i + 2).unwrap_or_default();
                if digits.len() < 3 || !digits.iter().all(u8::is_ascii_digit) {
                    return Err(self.error("bad decimal escape"));
                }
                let value = digits.iter().fold(0u32, |v, d| v * 10 + u32::from(d - b'0'));
                out.push(u8::try_from(value).map_err(|_| self.error("decimal escape above 255"))?);
                self.i += 2;
            }
            b'x' => {
                let hex = self.s.get(self.i..self.i + 2).unwrap_or_default();
                let value = std::str::from_utf8(hex).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                out.push(value.ok_or_else(|| self.error("bad hex escape"))?);
                self.i += 2;
            }
            // sexplib keeps an unknown escape as the backslash and the character.
            _ => out.extend_from_slice(&[b'\\', b]),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mach(s: &Sexp) -> String {
        String::from_utf8(s.to_machine()).unwrap()
    }

    #[test]
    fn machine_form_spacing_and_quoting() {
        let s = Sexp::list([
            Sexp::list([Sexp::atom("host"), Sexp::atom("a b")]),
            Sexp::list([Sexp::atom("message"), Sexp::atom("")]),
            Sexp::list([Sexp::atom("x"), Sexp::atom("y"), Sexp::atom("z")]),
        ]);
        assert_eq!(mach(&s), r#"((host"a b")(message"")(x y z))"#);
    }

    #[test]
    fn quoting_rules_match_sexplib() {
        for plain in ["abc", "a#b", "a|b", "#", "|", "-1", "x.y", "a'b", "{}"] {
            assert!(!must_quote(plain.as_bytes()), "{plain}");
        }
        for quoted in ["", "a b", "a(b", "a)", "a;b", "a\"", "a\\", "#|", "x|#", "\x7f", "é", "\t"] {
            assert!(must_quote(quoted.as_bytes()), "{quoted:?}");
        }
    }

    #[test]
    fn escapes_match_sexplib() {
        let s = Sexp::atom(b"q\"b\\n\nt\tr\rb\x08z\x00\x7f\xc3\xa9".to_vec());
        assert_eq!(mach(&s), r#""q\"b\\n\nt\tr\rb\bz\000\127\195\169""#);
    }

    #[test]
    fn round_trips_arbitrary_bytes() {
        let all: Vec<u8> = (0..=255).collect();
        let s = Sexp::list([Sexp::atom(all.clone()), Sexp::atom("plain")]);
        assert_eq!(parse(&s.to_machine()).unwrap(), s);
    }

    #[test]
    fn reads_human_form_with_continuations_and_comments() {
        let text = b"; written by hand\n((host a)\n  (message \"line one\\n\\\n   line two\")  )\n";
        let s = parse(text).unwrap();
        assert_eq!(
            s,
            Sexp::list([
                Sexp::list([Sexp::atom("host"), Sexp::atom("a")]),
                Sexp::list([Sexp::atom("message"), Sexp::atom("line one\nline two")]),
            ])
        );
    }

    #[test]
    fn a_stray_control_byte_and_a_flood_of_values_are_refused_at_once() {
        // Found by fuzzing: `(` followed by 0x01 read empty atoms forever (out of memory).
        assert!(parse(b"(\x01").is_err());
        assert!(parse(b"((host h)(pid 1)(message \x02))").is_err());
        // Thousands of tiny values: bounded memory, refused.
        let many = format!("({})", "()".repeat(5000));
        assert!(parse(many.as_bytes()).is_err());
        let fine = format!("({})", "()".repeat(100));
        assert!(parse(fine.as_bytes()).is_ok());
    }

    #[test]
    fn rejects_malformed_text() {
        for bad in [&b""[..], b"(", b")", b"(a))", b"(a) (b)", b"\"abc", b"(\"\\9\")", b"(\"\\300\")", b"(a#|b)"] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let deep = format!("{}{}", "(".repeat(100), ")".repeat(100));
        assert!(parse(deep.as_bytes()).is_err());
    }
}
