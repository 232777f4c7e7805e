//! JUnit XML test results (§4.10): `<testsuite>`/`<testcase>` with `name`, `classname`,
//! `file` (on the case or its suite), `time`, and `<failure>`/`<error>`/`<skipped>`.

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};
use serde::{Deserialize, Serialize};

/// Outcome of one test case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TestResult {
    Success,
    Failure,
    Error,
    Skipped,
}

/// One `<testcase>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TestCase {
    pub name: String,
    pub classname: String,
    pub file: Option<String>,
    pub result: TestResult,
    /// Seconds.
    pub time: f64,
    pub message: Option<String>,
}

/// Parses one JUnit XML document; malformed XML is an error naming the position.
pub fn parse_junit(xml: &str) -> Result<Vec<TestCase>, String> {
    let mut reader = Reader::from_str(xml);
    let mut cases = Vec::new();
    let mut suite_files: Vec<Option<String>> = Vec::new();
    let mut current: Option<TestCase> = None;
    let mut in_message = false;
    loop {
        let event = reader
            .read_event()
            .map_err(|err| format!("at byte {}: {err}", reader.buffer_position()))?;
        match event {
            Event::Start(tag) | Event::Empty(tag) if tag.local_name().as_ref() == "testsuite" => {
                let empty = matches!(event_kind(xml, &reader), Kind::Empty);
                if !empty {
                    suite_files.push(attr(&tag, "file"));
                }
            }
            Event::End(tag) if tag.local_name().as_ref() == "testsuite" => {
                suite_files.pop();
            }
            Event::Start(tag) | Event::Empty(tag) if tag.local_name().as_ref() == "testcase" => {
                let case = TestCase {
                    name: attr(&tag, "name").unwrap_or_default(),
                    classname: attr(&tag, "classname").unwrap_or_default(),
                    file: attr(&tag, "file")
                        .or_else(|| suite_files.iter().rev().flatten().next().cloned()),
                    result: TestResult::Success,
                    time: attr(&tag, "time")
                        .and_then(|t| t.parse().ok())
                        .unwrap_or(0.0),
                    message: None,
                };
                if matches!(event_kind(xml, &reader), Kind::Empty) {
                    cases.push(case);
                } else {
                    current = Some(case);
                }
            }
            Event::End(tag) if tag.local_name().as_ref() == "testcase" => {
                cases.extend(current.take());
            }
            Event::Start(tag) | Event::Empty(tag) => {
                let result = match tag.local_name().as_ref() {
                    "failure" => TestResult::Failure,
                    "error" => TestResult::Error,
                    "skipped" => TestResult::Skipped,
                    _ => continue,
                };
                if let Some(case) = current.as_mut() {
                    case.result = result;
                    case.message = attr(&tag, "message");
                    in_message =
                        case.message.is_none() && !matches!(event_kind(xml, &reader), Kind::Empty);
                }
            }
            Event::Text(text) if in_message => {
                if let (Some(case), Ok(text)) =
                    (current.as_mut(), Ok::<_, ()>(text.xml10_content()))
                {
                    let text = text.trim();
                    if !text.is_empty() {
                        case.message = Some(text.to_owned());
                    }
                }
            }
            Event::End(_) => in_message = false,
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(cases)
}

enum Kind {
    Empty,
    Start,
}

/// Whether the tag just read ended with `/>`.
fn event_kind(xml: &str, reader: &Reader<&[u8]>) -> Kind {
    let end = reader.buffer_position() as usize;
    if end >= 2 && xml.as_bytes().get(end - 2) == Some(&b'/') {
        Kind::Empty
    } else {
        Kind::Start
    }
}

fn attr(tag: &BytesStart<'_>, name: &str) -> Option<String> {
    tag.attributes()
        .flatten()
        .find(|a| a.key.local_name().as_ref() == name)
        .and_then(|a| {
            a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .ok()
                .map(|v| v.into_owned())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cases() {
        let xml = r#"<?xml version="1.0"?>
<testsuites><testsuite name="s" file="suite.py">
  <testcase name="ok" classname="a.B" time="1.5"/>
  <testcase name="bad" classname="a.B" file="b.py" time="0.25"><failure message="boom &amp; bust">trace</failure></testcase>
  <testcase name="err" classname="a.C"><error>oops</error></testcase>
  <testcase name="skip" classname="a.C"><skipped/></testcase>
</testsuite></testsuites>"#;
        let cases = parse_junit(xml).unwrap();
        assert_eq!(cases.len(), 4);
        assert_eq!(cases[0].file.as_deref(), Some("suite.py"));
        assert_eq!(cases[0].time, 1.5);
        assert_eq!(cases[1].result, TestResult::Failure);
        assert_eq!(cases[1].message.as_deref(), Some("boom & bust"));
        assert_eq!(cases[1].file.as_deref(), Some("b.py"));
        assert_eq!(cases[2].message.as_deref(), Some("oops"));
        assert_eq!(cases[3].result, TestResult::Skipped);
        assert!(parse_junit("<testsuite><testcase></testsuite>").is_err());
    }

    proptest::proptest! {
        /// Whatever a job leaves in a results file (mangled XML, binary), parsing ends in
        /// cases or an error, never a panic.
        #[test]
        fn never_panics(
            text in "(<testsuites?>|<testcase( name=\"[a-z&;<]{0,4}\")?( time=\"[0-9.e-]{0,5}\")?/?>|<failure( message=\"[^\"]{0,5}\")?>|</testcase>|</failure>|<skipped/>|<error>|&[a-z#0-9]{0,5};|[a-z <>/=\"]){0,40}",
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
        ) {
            let _ = parse_junit(&text);
            let _ = parse_junit(&String::from_utf8_lossy(&bytes));
        }
    }
}
