//! `enviromon hj212 decode` / `encode`: what a technician runs on a capture from a data logger.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

const EXAMPLE: &str = "##0101QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;Flag=5;CP=&&RtdInterval=30&&1C80\r\n";

fn run(args: &[&str], input: &str) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_enviromon"))
        .arg("hj212")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).to_string(),
    )
}

#[test]
fn decode_prints_each_frame_or_the_exact_reason_and_fails_if_any_was_refused() {
    let data = "QN=20260101101000000;ST=31;CN=2061;PW=123456;MN=DT1CEMS;Flag=4;CP=&&DataTime=20260101100000;a21026-Avg=18.2,a21026-Flag=N&&";
    let hourly = format!(
        "##{:04}{data}{:04X}\r\n",
        data.len(),
        enviromon::ingest::hj212::codec::crc16(data.as_bytes())
    );
    let (code, out) = run(&["decode"], &format!("{EXAMPLE}{hourly}"));
    assert_eq!(code, Some(0), "{out}");
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["header"]["MN"], "010000A8900016F000169DC0");
    assert_eq!(lines[1]["readings"][0]["quantity"], "SO2");
    assert_eq!(lines[1]["readings"][0]["period"], "hour");

    let bad = EXAMPLE.replace("1C80", "1C81");
    let (code, out) = run(&["decode"], &format!("{bad}\n{EXAMPLE}"));
    assert_eq!(
        code,
        Some(1),
        "a refused frame makes the exit code non-zero"
    );
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines[0]["error"],
        "CRC mismatch: computed 1C80, frame says 1C81"
    );
    assert_eq!(lines[1]["ok"], true, "the next frame is still decoded");
    let (code, out) = run(&["decode"], &EXAMPLE[..40]);
    assert_eq!(code, Some(1));
    assert!(out.contains("frame truncated"), "{out}");
}

#[test]
fn encode_builds_the_frame_decode_reads() {
    let json = r#"{"header": [["QN","20160801085857223"],["ST","32"],["CN","1062"],["PW","100000"],["MN","010000A8900016F000169DC0"],["Flag","5"]], "cp": [[["RtdInterval","30"]]]}"#;
    let (code, out) = run(&["encode"], json);
    assert_eq!(code, Some(0));
    assert_eq!(out, EXAMPLE, "byte for byte the standard's example");
}
