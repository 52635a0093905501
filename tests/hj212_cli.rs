//! `enviromon hj212 decode` / `encode`: what a technician runs on a capture from a data logger.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test panics on what it did not expect

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

const EXAMPLE: &str = "##0101QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;Flag=5;CP=&&RtdInterval=30&&1C80\r\n";

fn run(args: &[&str], input: &str) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_enviromon"))
        .arg("hj212")
        .args(args)
        .env_remove("ENVIROMON_SM4_KEY")
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

/// HJ 212-2025 Appendix A.2's encrypted examples, as the standard prints them (key: sixteen bytes
/// 0x30, i.e. the hex text `30` × 16). Example 2 has 13 whole blocks; example 4 has 9 and the
/// plaintext tail `g=N`.
const A2_HEADER: &str =
    "QN=20240520210700000;ST=31;CN=2051;PW=123456;MN=010000A8900016F000169DC0;Flag=9;";
const A2_EX2_CIPHER: &str = "E43E159ACFAB242CB53155FB8B9281A1A242577ABFAED881BE88B72D69FC55ED1A80119FAAC8B3CD33D285CC76F57F2CA7F88B9573C6647E0F07E24609BD6B63EB20C5B9784F28E71D2F4994FF61D9E1C2B3075592B4D1E09C4D8BB27BE97B559E3DA6643781A6F477769DEEB009B10DFFF3426922725D607DC4480F0CAC5F70DB2587B124BCB281592721D6E4BC180A97E5E111499CBE822E31C8D7761553543AA24207C290997BBDE64F9266BC5F529A172E381C1D898CA1A0D771A914A7B2D7467C70B94F1D4A7B0350A48DBF8B41";
const A2_EX4_CIPHER: &str = "E43E159ACFAB242CB53155FB8B9281A1A242577ABFAED881BE88B72D69FC55ED1A80119FAAC8B3CD33D285CC76F57F2CA7F88B9573C6647E0F07E24609BD6B63EB20C5B9784F28E71D2F4994FF61D9E13B391A1D2A454B65388D5D9435DBF021528C7BF9755EF16518710C0CAC0ADEF9C5156CD0A5A17674AC0ED2ABC40023E9EF70128554B82438E91ADCE98A0D03A4";

/// The standard's printed form `{0xE4,0x3E,…}` (the unit tests check the writer against the
/// standard's own text).
fn braced(hex_text: &str) -> String {
    enviromon::ingest::hj212::crypto::write_braced(&hex::decode(hex_text).unwrap())
}

fn a2_examples() -> (String, String) {
    (
        format!("##0295{A2_HEADER}CP=&&{}&&2200\r\n", braced(A2_EX2_CIPHER)),
        format!(
            "##0234{A2_HEADER}CP=&&{}g=N&&B541\r\n",
            braced(A2_EX4_CIPHER)
        ),
    )
}

#[test]
fn decode_with_the_sm4_key_reads_the_standards_appendix_a2_examples() {
    let (ex2, ex4) = a2_examples();
    let key = "30".repeat(16);
    let (code, out) = run(&["decode", "--sm4-key", &key], &format!("{ex2}{ex4}"));
    assert_eq!(code, Some(0), "{out}");
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for l in &lines {
        assert_eq!(
            (
                l["edition"].as_str(),
                l["encrypted"].as_bool(),
                l["resend"].as_bool()
            ),
            (Some("2025"), Some(true), Some(false)),
            "{l}"
        );
        assert_eq!(l["header"]["CN"], "2051");
    }
    // The decrypted CP items, as Appendix A.2 prints the plaintext.
    assert_eq!(lines[0]["pollutants"]["a01014"]["Avg"], "3.211");
    assert_eq!(lines[0]["pollutants"]["a01012"]["Max"], "9.3");
    assert_eq!(
        lines[1]["pollutants"]["a01014"]["Flag"], "N",
        "the plaintext tail g=N completes a01014-Flag"
    );
    assert_eq!(
        lines[1]["cp"][0][0],
        serde_json::json!(["DataTime", "20240520210600"])
    );
    // Without the key, or with another, each frame is refused with its reason and the exit is 1.
    let (code, out) = run(&["decode"], &ex2);
    assert_eq!(code, Some(1));
    assert!(
        out.contains("SM4-encrypted") && out.contains("--sm4-key"),
        "{out}"
    );
    let (code, out) = run(&["decode", "--sm4-key", &"31".repeat(16)], &ex4);
    assert_eq!(code, Some(1));
    assert!(
        out.contains("SM4") || out.contains("CRC mismatch after SM4"),
        "{out}"
    );
}

#[test]
fn encode_with_the_sm4_key_gives_the_standards_encrypted_frame() {
    let json = r#"{"header": [["QN","20240520210700000"],["ST","31"],["CN","2051"],["PW","123456"],["MN","010000A8900016F000169DC0"],["Flag","9"]], "cp": [[["DataTime","20240520210600"]],[["a01011-Min","1.35"],["a01011-Avg","1.35"],["a01011-Max","1.35"],["a01011-Flag","N"]],[["a01014-Min","3.20"],["a01014-Avg","3.20"],["a01014-Max","3.20"],["a01014-Flag","N"]]]}"#;
    let (code, out) = run(&["encode", "--sm4-key", &"30".repeat(16)], json);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(out, a2_examples().1, "byte for byte Appendix A.2 example 4");
    // Without a Flag, encode writes an HJ 212-2025 frame (Flag 8).
    let bare = r#"{"header": [["QN","1"],["ST","31"],["CN","2011"],["PW","1"],["MN","X"]], "cp": [[["DataTime","20260101000000"]]]}"#;
    let (code, out) = run(&["encode"], bare);
    assert_eq!(code, Some(0));
    assert!(out.contains(";MN=X;Flag=8;CP=&&"), "{out}");
    let (code, out) = run(&["decode"], &out);
    assert_eq!(code, Some(0));
    assert!(
        out.contains(r#""edition":"2025""#) && out.contains(r#""encrypted":false"#),
        "{out}"
    );
}
