//! CSV tables: a vendor's export read row by row (never the whole file), in the layout its
//! header or mapping describes (`mapping`). Fields are bytes first, so a GBK export reads as
//! well as a UTF-8 one.

use std::borrow::Cow;
use std::io::BufRead;

use super::mapping::{self, Mapping, Plan};
use super::{ImportError, Sink};

fn decode<'a>(field: &'a [u8], enc: &'static encoding_rs::Encoding) -> Cow<'a, str> {
    if enc == encoding_rs::UTF_8 {
        if let Ok(s) = std::str::from_utf8(field) {
            return Cow::Borrowed(s);
        }
        // A file that looked like UTF-8 at its start (an ASCII header) with GBK further on.
        let (s, _) = encoding_rs::GB18030.decode_without_bom_handling(field);
        return s;
    }
    let (s, _) = enc.decode_without_bom_handling(field);
    s
}

/// The encoding of a file whose mapping names none: UTF-8 if its first block read is (a sequence
/// cut at the end does not count), else GB18030, which Chinese Windows software writes (GBK).
/// Decided for the whole file: some GBK text is valid UTF-8 by accident (状态 is).
fn detect(head: &[u8]) -> &'static encoding_rs::Encoding {
    match std::str::from_utf8(head) {
        Ok(_) => encoding_rs::UTF_8,
        Err(e) if e.error_len().is_none() => encoding_rs::UTF_8,
        Err(_) => encoding_rs::GB18030,
    }
}

/// Read a CSV table into `sink`.
pub fn import(input: impl BufRead, m: &Mapping, sink: &mut Sink<'_>) -> Result<(), ImportError> {
    let mut input = input;
    let enc = match m.encoding.as_deref() {
        Some(name) => mapping::encoding(Some(name)).unwrap_or(encoding_rs::UTF_8),
        None => detect(input.fill_buf()?),
    };
    let delimiter = m.delimiter.unwrap_or(',');
    let delimiter = u8::try_from(delimiter)
        .map_err(|_| ImportError::Layout(format!("delimiter {delimiter:?} is not one byte")))?;
    let mut rdr = ::csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .from_reader(input);
    let mut rec = ::csv::ByteRecord::new();
    let mut skipped = 0;
    let mut plan: Option<Plan> = None;
    let mut row = 0u64;
    while rdr.read_byte_record(&mut rec)? {
        let line = rec.position().map(|p| p.line()).unwrap_or(0);
        if skipped < m.skip_rows {
            skipped += 1;
            continue;
        }
        let cells: Vec<Cow<'_, str>> = rec.iter().map(|f| decode(f, enc)).collect();
        let Some(p) = &plan else {
            let header: Vec<String> = cells.iter().map(|c| c.to_string()).collect();
            plan = Some(Plan::new(m, &header).map_err(ImportError::Layout)?);
            continue;
        };
        if cells.iter().all(|c| c.trim().is_empty()) {
            continue;
        }
        row += 1;
        if sink.skip(row) {
            continue;
        }
        let refs: Vec<&str> = cells.iter().map(|c| c.as_ref()).collect();
        let items = p.row(line, &refs);
        sink.table_row(row, items, || refs.join(&(delimiter as char).to_string()))?;
    }
    if plan.is_none() {
        return Err(ImportError::Layout("the file has no header line".into()));
    }
    Ok(())
}
