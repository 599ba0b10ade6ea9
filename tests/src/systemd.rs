//! Reading `deploy/systemd/` the way systemd does, so a test can start the binaries with exactly
//! the arguments and environment a unit would give them.
//!
//! - [`environment_file`]: `EnvironmentFile=` syntax (systemd.exec(5)): `#` and `;` start a
//!   comment only at the start of a line; everything after the first `=` is the value, with
//!   leading and trailing whitespace dropped — an inline `# note` stays in the value.
//! - [`Unit`]: a unit's `Environment=`, `EnvironmentFile=` and `ExecStart=` (with `\`
//!   continuations), and the command line `ExecStart=` expands to for an environment.

use std::collections::BTreeMap;

/// The assignments of an environment file, in order (a later one wins).
///
/// Unquoted values keep interior whitespace and lose leading and trailing whitespace; a
/// backslash keeps the next character, and one at the end of a line continues the value on
/// the next line. A value that starts with `'` or `"` runs to the matching quote (which may be
/// on a later line); single quotes keep everything verbatim, double quotes honour `\` before
/// `"`, `\`, `$`, `` ` `` and a newline. Lines without `=` are ignored, as systemd does.
pub fn environment_file(text: &str) -> Vec<(String, String)> {
    let mut assignments = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let Some((key, rest)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim().to_owned();
        let rest = rest.trim_start();
        let value = match rest.chars().next() {
            Some(quote @ ('\'' | '"')) => quoted(&rest[1..], quote, &mut lines),
            _ => unquoted(rest, &mut lines),
        };
        assignments.push((key, value));
    }
    assignments
}

fn unquoted<'a>(first: &'a str, lines: &mut impl Iterator<Item = &'a str>) -> String {
    let mut value = String::new();
    let mut line = first;
    loop {
        let mut chars = line.chars();
        let mut continued = false;
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some(next) => value.push(next),
                    None => continued = true,
                }
            } else {
                value.push(c);
            }
        }
        match continued.then(|| lines.next()).flatten() {
            Some(next) => line = next,
            None => break,
        }
    }
    value
        .trim_end_matches([' ', '\t', '\r'])
        .trim_start()
        .to_owned()
}

fn quoted<'a>(first: &'a str, quote: char, lines: &mut impl Iterator<Item = &'a str>) -> String {
    let mut value = String::new();
    let mut line = first;
    loop {
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            if c == quote {
                return value;
            }
            if quote == '"' && c == '\\' {
                match chars.next() {
                    Some(next @ ('"' | '\\' | '$' | '`')) => value.push(next),
                    Some(next) => {
                        value.push('\\');
                        value.push(next);
                    }
                    // A backslash before the newline joins the lines.
                    None => {
                        let Some(next) = lines.next() else {
                            return value;
                        };
                        line = next;
                        chars = line.chars();
                        continue;
                    }
                }
            } else {
                value.push(c);
            }
        }
        let Some(next) = lines.next() else {
            return value;
        };
        value.push('\n');
        line = next;
    }
}

/// What a service unit's `[Service]` section says about starting it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unit {
    /// `Environment=` assignments, in order.
    pub environment: Vec<(String, String)>,
    /// `EnvironmentFile=` paths (a leading `-`, "missing is fine", removed).
    pub environment_files: Vec<String>,
    /// `ExecStart=` split into words, `${VAR}` not yet expanded.
    pub exec_start: Vec<String>,
}

impl Unit {
    /// Parses the keys this test needs (no quoting inside them: the project's units use none).
    pub fn parse(text: &str) -> Unit {
        let mut unit = Unit::default();
        let mut logical = Vec::new();
        let mut pending = String::new();
        for line in text.lines() {
            let line = line.trim();
            if pending.is_empty() && (line.starts_with('#') || line.starts_with(';')) {
                continue;
            }
            match line.strip_suffix('\\') {
                Some(head) => {
                    pending.push_str(head);
                    pending.push(' ');
                }
                None => {
                    pending.push_str(line);
                    logical.push(std::mem::take(&mut pending));
                }
            }
        }
        for line in logical {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            match key.trim() {
                "Environment" => {
                    if let Some((name, value)) = value.trim().split_once('=') {
                        unit.environment.push((name.to_owned(), value.to_owned()));
                    }
                }
                "EnvironmentFile" => unit
                    .environment_files
                    .push(value.trim().trim_start_matches('-').to_owned()),
                "ExecStart" => {
                    unit.exec_start = value.split_whitespace().map(str::to_owned).collect()
                }
                _ => {}
            }
        }
        unit
    }

    /// The environment the service starts with: `Environment=`, then the files' assignments
    /// (a file wins over `Environment=`, as in systemd).
    pub fn environment_with(&self, files: &[Vec<(String, String)>]) -> BTreeMap<String, String> {
        let mut environment: BTreeMap<String, String> = self.environment.iter().cloned().collect();
        for file in files {
            environment.extend(file.iter().cloned());
        }
        environment
    }

    /// `ExecStart=` with every `${VAR}` replaced from `environment` (an unset one becomes
    /// empty, as in systemd).
    pub fn command_line(&self, environment: &BTreeMap<String, String>) -> Vec<String> {
        self.exec_start
            .iter()
            .map(|word| expand(word, environment))
            .collect()
    }
}

fn expand(word: &str, environment: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = word;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        match rest[start + 2..].find('}') {
            Some(end) => {
                let name = &rest[start + 2..start + 2 + end];
                out.push_str(environment.get(name).map_or("", String::as_str));
                rest = &rest[start + 2 + end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(text: &str) -> Vec<(String, String)> {
        environment_file(text)
    }

    fn pair(key: &str, value: &str) -> (String, String) {
        (key.to_owned(), value.to_owned())
    }

    #[test]
    fn every_line_is_an_assignment_of_its_own() {
        assert_eq!(
            pairs("A=1\nB=2\nC=3\n"),
            [pair("A", "1"), pair("B", "2"), pair("C", "3")]
        );
    }

    #[test]
    fn an_inline_hash_is_part_of_the_value() {
        assert_eq!(
            pairs("A=2000     # then DEGRADED\n"),
            [pair("A", "2000     # then DEGRADED")]
        );
    }

    #[test]
    fn comments_blank_lines_and_lines_without_equals_are_skipped() {
        assert_eq!(
            pairs("# c\n; c\n\n   # indented\nnot an assignment\nB = x y \n"),
            [pair("B", "x y")]
        );
    }

    #[test]
    fn quotes_and_escapes_follow_systemd() {
        assert_eq!(pairs("A='a # b'\n"), [pair("A", "a # b")]);
        assert_eq!(pairs("A=\"x \\\"y\\\" \\$z\"\n"), [pair("A", "x \"y\" $z")]);
        assert_eq!(pairs("A=one\\\n two\n"), [pair("A", "one two")]);
        assert_eq!(pairs("A=a\\\\b\n"), [pair("A", "a\\b")]);
        assert_eq!(pairs("A='multi\nline'\n"), [pair("A", "multi\nline")]);
        // Quotes after the first character stay.
        assert_eq!(pairs("A=x'y'\n"), [pair("A", "x'y'")]);
    }

    #[test]
    fn a_unit_expands_exec_start_with_the_file_winning_over_environment() {
        let unit = Unit::parse(
            "[Service]\n# comment\nEnvironment=URL=nats://fallback:4222\n\
             EnvironmentFile=-/etc/playhead/env\n\
             ExecStart=/bin/node \\\n    --flag x \\\n    --url ${URL}\n",
        );
        assert_eq!(unit.environment_files, ["/etc/playhead/env"]);
        let file = environment_file("URL=nats://real:4222\n");
        let environment = unit.environment_with(&[file]);
        assert_eq!(
            unit.command_line(&environment),
            ["/bin/node", "--flag", "x", "--url", "nats://real:4222"]
        );
        assert_eq!(
            unit.command_line(&unit.environment_with(&[])),
            ["/bin/node", "--flag", "x", "--url", "nats://fallback:4222"]
        );
    }
}
