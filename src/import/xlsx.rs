//! XLSX workbooks (calamine): one sheet read cell by cell in row order, so a large sheet is never
//! held whole; its rows go through the same table mapping as CSV (`mapping`). Excel dates become
//! `YYYY-MM-DD HH:MM:SS` in the mapping's time zone, as they read in the sheet.

use std::path::Path;

use calamine::{DataRef, Reader, Xlsx};

use super::mapping::{Mapping, Plan};
use super::{ImportError, Sink};

fn text(v: &DataRef<'_>) -> String {
    match v {
        DataRef::Empty => String::new(),
        DataRef::String(s) => s.clone(),
        DataRef::SharedString(s) => s.to_string(),
        DataRef::Float(f) => {
            if f.fract() == 0.0 && f.abs() < 1e15 {
                format!("{}", *f as i64)
            } else {
                f.to_string()
            }
        }
        DataRef::Int(i) => i.to_string(),
        DataRef::Bool(b) => b.to_string(),
        DataRef::DateTime(d) => excel_time(d.as_f64()),
        DataRef::DateTimeIso(s) | DataRef::DurationIso(s) => s.clone(),
        DataRef::Error(e) => format!("#{e:?}"),
    }
}

/// An Excel serial date (days since 1899-12-30, the 1900 system) as local wall-clock text,
/// rounded to the second.
pub fn excel_time(serial: f64) -> String {
    let base = chrono::NaiveDate::from_ymd_opt(1899, 12, 30)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .unwrap_or_default();
    let secs = (serial * 86_400.0).round();
    // A serial far outside Excel's dates (years 1900–9999) is not a date: kept as its number,
    // so the time column refuses it with the cell's text.
    let t = chrono::Duration::try_seconds(secs as i64)
        .filter(|_| secs.is_finite() && secs.abs() < 3.2e11)
        .and_then(|d| base.checked_add_signed(d));
    match t {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S").to_string(),
        None => serial.to_string(),
    }
}

/// Excel's last column (XFD): a cell further right is not a worksheet's.
const MAX_COLUMNS: usize = 16_384;

/// Read the mapping's sheet (default: the first) of the workbook at `path` into `sink`.
pub fn import(path: &Path, m: &Mapping, sink: &mut Sink<'_>) -> Result<(), ImportError> {
    let x = |e: calamine::XlsxError| ImportError::Xlsx(e.to_string());
    let mut wb: Xlsx<_> = calamine::open_workbook(path).map_err(x)?;
    let sheet = match &m.sheet {
        Some(s) => s.clone(),
        None => wb
            .sheet_names()
            .first()
            .cloned()
            .ok_or_else(|| ImportError::Xlsx("the workbook has no sheet".into()))?,
    };
    let mut cells = wb.worksheet_cells_reader(&sheet).map_err(x)?;
    let mut plan: Option<Plan> = None;
    let mut current: Option<u32> = None;
    let mut values: Vec<String> = Vec::new();
    let mut row = 0u64;
    let mut skipped = 0usize;
    let mut flush = |r: u32,
                     values: &mut Vec<String>,
                     plan: &mut Option<Plan>,
                     sink: &mut Sink<'_>|
     -> Result<(), ImportError> {
        let vals = std::mem::take(values);
        if skipped < m.skip_rows {
            skipped += 1;
            return Ok(());
        }
        let Some(p) = plan else {
            *plan = Some(Plan::new(m, &vals).map_err(ImportError::Layout)?);
            return Ok(());
        };
        if vals.iter().all(|c| c.trim().is_empty()) {
            return Ok(());
        }
        row += 1;
        if sink.skip(row) {
            return Ok(());
        }
        let refs: Vec<&str> = vals.iter().map(String::as_str).collect();
        let items = p.row(u64::from(r) + 1, &refs);
        sink.table_row(row, items, || refs.join(","))
    };
    while let Some(cell) = cells.next_cell().map_err(x)? {
        let (r, c) = cell.get_position();
        if current != Some(r) {
            if let Some(prev) = current {
                flush(prev, &mut values, &mut plan, sink)?;
            }
            current = Some(r);
        }
        let c = c as usize;
        if c >= MAX_COLUMNS {
            return Err(ImportError::Xlsx(format!(
                "row {}: a cell in column {} (Excel stops at {MAX_COLUMNS})",
                r + 1,
                c + 1
            )));
        }
        if values.len() <= c {
            values.resize(c + 1, String::new());
        }
        values[c] = text(cell.get_value());
    }
    if let Some(prev) = current {
        flush(prev, &mut values, &mut plan, sink)?;
    }
    if plan.is_none() {
        return Err(ImportError::Layout(format!(
            "sheet {sheet:?} has no header row"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn excel_serial_dates_read_as_wall_clock_time() {
        // 43831 = 2020-01-01 (days since 1899-12-30); 0.5 = noon.
        assert_eq!(super::excel_time(43831.5), "2020-01-01 12:00:00");
        assert_eq!(
            super::excel_time(43831.0 + 1.0 / 24.0),
            "2020-01-01 01:00:00"
        );
    }
}
