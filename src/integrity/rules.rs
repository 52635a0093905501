//! The eleven integrity rules, one pure function each over a unit's [`Series`] (through a
//! [`Context`] holding what several rules share: which minutes the unit ran, its hours, its
//! baselines). Each function says in its doc what it cannot see.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;

use crate::standards::air::median;

use super::{
    cst, cst_day, cst_minute_of_day, Finding, Minute, Series, Severity, Thresholds, Window, DAY_MS,
    HOUR_MS, MINUTE_MS, POLLUTANTS,
};

/// One hour of a unit, from its minutes (the rules' own view, not HJ 75's verdict).
#[derive(Debug, Clone, Default)]
pub struct Hour {
    pub start_ms: i64,
    pub running_minutes: usize,
    pub corrected: [Option<f64>; 3],
    pub raw: [Option<f64>; 3],
    pub o2: Option<f64>,
    pub flow: Option<f64>,
    pub load_mw: Option<f64>,
}

impl Hour {
    /// Running for most of the hour (≥ 45 minutes, as HJ 75 wants for a valid hour).
    pub fn running(&self) -> bool {
        self.running_minutes >= 45
    }
}

/// What the rules share.
pub struct Context<'a> {
    pub s: &'a Series<'a>,
    pub th: &'a Thresholds,
    /// Per minute: the unit runs, by its physical channels (flags not considered).
    pub running: Vec<bool>,
    pub hours: Vec<Hour>,
    median_flow: Option<f64>,
}

/// The `p` quantile (0–1) by nearest rank.
fn quantile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn mean(v: impl IntoIterator<Item = f64>) -> Option<f64> {
    let (mut s, mut n) = (0.0, 0usize);
    for x in v {
        s += x;
        n += 1;
    }
    (n > 0).then(|| s / n as f64)
}

fn round(x: f64, d: i32) -> f64 {
    let k = 10f64.powi(d);
    (x * k).round() / k
}

/// Maximal runs of indexes `0..n` where `ok` holds and each follows the one before
/// (`follows(i)`: index `i` comes right after `i - 1`).
fn runs_of(
    n: usize,
    follows: impl Fn(usize) -> bool,
    ok: impl Fn(usize) -> bool,
) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    for i in 0..n {
        let good = ok(i);
        if let Some(s) = start {
            if !good || !follows(i) {
                out.push(s..i);
                start = None;
            }
        }
        if good && start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        out.push(s..n);
    }
    out
}

impl<'a> Context<'a> {
    pub fn new(s: &'a Series<'a>, th: &'a Thresholds) -> Context<'a> {
        let median_positive = |get: fn(&Minute) -> Option<f64>| {
            let mut v: Vec<f64> = s
                .minutes
                .iter()
                .filter_map(get)
                .filter(|x| *x > 0.0)
                .collect();
            median(&mut v)
        };
        let median_flow = median_positive(|m| m.flow);
        let median_power = median_positive(|m| m.facility_power);
        let cap = s.unit.capacity_mw;
        let running = s
            .minutes
            .iter()
            .map(|m| match m.load_mw {
                Some(l) => l >= th.running_load_share * cap,
                None => {
                    let by_flow = m
                        .flow
                        .zip(median_flow)
                        .is_some_and(|(f, mf)| f >= th.running_flow_share * mf)
                        && m.temp.is_none_or(|t| t >= th.running_temp_c);
                    let by_power = m
                        .facility_power
                        .zip(median_power)
                        .is_some_and(|(p, mp)| p >= th.running_power_share * mp);
                    by_flow || by_power
                }
            })
            .collect::<Vec<_>>();
        let mut by_hour: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
        for (i, m) in s.minutes.iter().enumerate() {
            by_hour
                .entry(m.ts_ms.div_euclid(HOUR_MS) * HOUR_MS)
                .or_default()
                .push(i);
        }
        let hours = by_hour
            .into_iter()
            .map(|(start_ms, idx)| {
                let run: Vec<&Minute> = idx
                    .iter()
                    .filter(|&&i| running[i] && !s.minutes[i].calibration)
                    .map(|&i| &s.minutes[i])
                    .collect();
                let per = |f: &dyn Fn(&Minute) -> Option<f64>| {
                    // A mean only from most of the hour's minutes.
                    let v: Vec<f64> = run.iter().filter_map(|m| f(m)).collect();
                    (v.len() >= 45).then(|| mean(v)).flatten()
                };
                Hour {
                    start_ms,
                    running_minutes: idx.iter().filter(|&&i| running[i]).count(),
                    corrected: [0, 1, 2].map(|p| per(&|m: &Minute| m.corrected[p])),
                    raw: [0, 1, 2].map(|p| per(&|m: &Minute| m.raw[p])),
                    o2: per(&|m: &Minute| m.o2),
                    flow: per(&|m: &Minute| m.flow),
                    load_mw: per(&|m: &Minute| m.load_mw),
                }
            })
            .collect();
        Context {
            s,
            th,
            running,
            hours,
            median_flow,
        }
    }

    fn unit(&self) -> &str {
        &self.s.unit.id
    }

    /// Runs of consecutive minutes (no gap) for which `pred(i)` holds, as index ranges.
    fn runs(&self, pred: impl Fn(usize) -> bool) -> Vec<std::ops::Range<usize>> {
        let m = self.s.minutes;
        runs_of(
            m.len(),
            |i| i > 0 && m[i].ts_ms - m[i - 1].ts_ms == MINUTE_MS,
            pred,
        )
    }

    /// Runs of consecutive hours (one hour apart) for which `pred` holds.
    fn hour_runs(&self, pred: impl Fn(&Hour) -> bool) -> Vec<std::ops::Range<usize>> {
        let h = &self.hours;
        runs_of(
            h.len(),
            |i| i > 0 && h[i].start_ms - h[i - 1].start_ms == HOUR_MS,
            |i| pred(&h[i]),
        )
    }

    /// Runs of hours where `hit` holds, bridging hours too short to judge (`short`: minutes lost
    /// to the network, a start-up) so they do not break a run; each run trimmed to its first and
    /// last hit, with how many hours hit.
    fn bridged_hour_runs(
        &self,
        hit: impl Fn(&Hour) -> bool,
        short: impl Fn(&Hour) -> bool,
    ) -> Vec<(std::ops::Range<usize>, usize)> {
        self.hour_runs(|h| hit(h) || short(h))
            .into_iter()
            .filter_map(|r| {
                let hits: Vec<usize> = r.filter(|&i| hit(&self.hours[i])).collect();
                Some((*hits.first()?..*hits.last()? + 1, hits.len()))
            })
            .collect()
    }

    fn span(&self, r: &std::ops::Range<usize>) -> (i64, i64) {
        let m = self.s.minutes;
        (m[r.start].ts_ms, m[r.end - 1].ts_ms + MINUTE_MS)
    }

    fn hour_span(&self, r: &std::ops::Range<usize>) -> (i64, i64) {
        (
            self.hours[r.start].start_ms,
            self.hours[r.end - 1].start_ms + HOUR_MS,
        )
    }

    /// Minute indexes per CST day.
    fn days(&self) -> BTreeMap<i64, Vec<usize>> {
        let mut d: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
        for (i, m) in self.s.minutes.iter().enumerate() {
            d.entry(cst_day(m.ts_ms)).or_default().push(i);
        }
        d
    }

    #[allow(clippy::too_many_arguments)]
    fn finding(
        &self,
        rule: &'static str,
        channel: &str,
        (start_ms, end_ms): (i64, i64),
        severity: Severity,
        evidence: serde_json::Value,
        summary_zh: String,
        summary_en: String,
    ) -> Finding {
        Finding {
            unit: self.unit().to_string(),
            rule,
            channel: channel.to_string(),
            start_ms,
            end_ms,
            severity,
            evidence,
            summary_zh,
            summary_en,
        }
    }
}

/// How a rule reads one channel of a minute.
type Channel = fn(&Minute) -> Option<f64>;

/// `constant_value`: a run of identical minute values of a pollutant or O2 while the unit runs
/// (calibration minutes aside). Cannot see a value frozen with added noise (see `narrow_band`).
pub fn constant_value(c: &Context<'_>) -> Vec<Finding> {
    let th = c.th;
    let mut out = Vec::new();
    let channels: [(&str, Channel); 4] = [
        ("SO2", |m| m.raw[0]),
        ("NOx", |m| m.raw[1]),
        ("PM", |m| m.raw[2]),
        ("O2", |m| m.o2),
    ];
    let m = c.s.minutes;
    for (name, get) in channels {
        let mut i = 0;
        while i < m.len() {
            let Some(v0) = get(&m[i]).filter(|_| c.running[i] && !m[i].calibration) else {
                i += 1;
                continue;
            };
            let mut j = i + 1;
            while j < m.len()
                && m[j].ts_ms - m[j - 1].ts_ms == MINUTE_MS
                && c.running[j]
                && !m[j].calibration
                && get(&m[j]).is_some_and(|v| (v - v0).abs() <= th.constant_epsilon)
            {
                j += 1;
            }
            if j - i >= th.constant_minutes {
                let span = c.span(&(i..j));
                out.push(c.finding(
                    "constant_value",
                    name,
                    span,
                    Severity::Warning,
                    json!({"value": v0, "minutes": j - i, "threshold_minutes": th.constant_minutes}),
                    format!(
                        "{name} 自 {} 起连续 {} 分钟数值完全不变（{v0}），机组运行中；分析仪可能卡死或数据被固定",
                        cst(span.0),
                        j - i
                    ),
                    format!(
                        "{name} stayed exactly at {v0} for {} consecutive minutes from {} while the unit ran: a stuck analyser or a fixed value",
                        j - i,
                        cst(span.0)
                    ),
                ));
            }
            i = j;
        }
    }
    out
}

/// The load's (or, without a load channel, the flow's as a share of its median, scaled to
/// capacity) 5th–95th percentile range over `idx`, MW.
fn load_swing(c: &Context<'_>, idx: &[usize]) -> Option<f64> {
    let m = c.s.minutes;
    let mut v: Vec<f64> = idx
        .iter()
        .filter(|&&i| c.running[i])
        .filter_map(|&i| {
            m[i].load_mw.or_else(|| {
                let mf = c.median_flow?;
                Some(m[i].flow? / mf * c.s.unit.capacity_mw * 0.75)
            })
        })
        .collect();
    if v.len() < 60 {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(quantile(&v, 0.95) - quantile(&v, 0.05))
}

/// `narrow_band`: a day whose raw pollutant barely moves (1st–99th percentile range under a small
/// share of the analyser's range) while the unit's load swings, or under half that share while it
/// is steady. Cannot see a narrowed signal on a steady-load day that keeps the width a steady load
/// makes plausible, nor a band wider than the threshold.
pub fn narrow_band(c: &Context<'_>) -> Vec<Finding> {
    let th = c.th;
    let m = c.s.minutes;
    let mut out = Vec::new();
    for (day, idx) in c.days() {
        let Some(swing) = load_swing(c, &idx) else {
            continue;
        };
        // A moving load must move the values; a steady one still leaves a running stack's own
        // variation (coal, FGD and SCR control), so a band half as wide is suspect at any load.
        let moving = swing >= th.narrow_load_swing_share * c.s.unit.capacity_mw;
        let share = if moving {
            th.narrow_band_share
        } else {
            th.narrow_flat_share
        };
        for (p, name) in POLLUTANTS.iter().enumerate() {
            let mut v: Vec<f64> = idx
                .iter()
                .filter(|&&i| c.running[i] && !m[i].calibration)
                .filter_map(|&i| m[i].raw[p])
                .collect();
            if v.len() < th.narrow_min_minutes {
                continue;
            }
            v.sort_by(f64::total_cmp);
            let range = quantile(&v, 0.99) - quantile(&v, 0.01);
            let allowed = share * c.s.unit.ranges[p];
            if range < allowed {
                let (load_zh, load_en) = if moving {
                    (
                        format!("而机组负荷变化 {swing:.0} MW"),
                        format!("while the load swung {swing:.0} MW"),
                    )
                } else {
                    (
                        format!("负荷平稳（变化 {swing:.0} MW）时也过窄"),
                        format!("too narrow even for a steady load (swing {swing:.0} MW)"),
                    )
                };
                out.push(c.finding(
                    "narrow_band",
                    name,
                    (day, day + DAY_MS),
                    Severity::Warning,
                    json!({"range": round(range, 3), "allowed": allowed, "analyser_range": c.s.unit.ranges[p],
                           "load_swing_mw": round(swing, 1), "minutes": v.len()}),
                    format!(
                        "{name} 在 {} 全天仅在 {:.2} mg/m³ 范围内波动（量程 {} 的 {:.1}%），{load_zh}；数据可能被压缩或替换",
                        &cst(day)[..10], range, c.s.unit.ranges[p], range * 100.0 / c.s.unit.ranges[p]
                    ),
                    format!(
                        "{name} moved within {:.2} mg/m3 all day on {} ({:.1} % of the analyser's range {}) {load_en}: compressed or replaced data",
                        range, &cst(day)[..10], range * 100.0 / c.s.unit.ranges[p], c.s.unit.ranges[p]
                    ),
                ));
            }
        }
    }
    out
}

/// `detection_limit_hugging`: consecutive hours whose raw minutes sit at or just above the
/// analyser's detection limit. Cannot tell a truly clean stack whose values are that low and
/// steady from a clamped one; real readings that low scatter below the limit too, which this
/// rule requires them not to.
pub fn detection_limit_hugging(c: &Context<'_>) -> Vec<Finding> {
    let th = c.th;
    let m = c.s.minutes;
    let mut out = Vec::new();
    for (p, name) in POLLUTANTS.iter().enumerate() {
        let dl = c.s.unit.detection_limits[p];
        let hi = dl * (1.0 + th.dl_margin);
        let mut hugging: BTreeSet<i64> = BTreeSet::new();
        let mut per_hour: BTreeMap<i64, (usize, usize)> = BTreeMap::new();
        for (i, x) in m.iter().enumerate() {
            if !c.running[i] || x.calibration {
                continue;
            }
            let Some(v) = x.raw[p] else { continue };
            let e = per_hour
                .entry(x.ts_ms.div_euclid(HOUR_MS) * HOUR_MS)
                .or_default();
            e.0 += 1;
            if v >= dl - 1e-9 && v <= hi {
                e.1 += 1;
            }
        }
        // An hour with at least half its minutes judged hugs when most of them do; one with
        // fewer (minutes lost to the network, a start-up) is too short to judge and does not
        // break a run.
        let mut short: BTreeSet<i64> = BTreeSet::new();
        for (h, (n, inside)) in &per_hour {
            if *n < 30 {
                short.insert(*h);
            } else if *inside as f64 >= th.dl_hour_share * *n as f64 {
                hugging.insert(*h);
            }
        }
        let runs = c.bridged_hour_runs(
            |h| hugging.contains(&h.start_ms),
            |h| short.contains(&h.start_ms) || !per_hour.contains_key(&h.start_ms),
        );
        for (r, hits) in runs {
            if hits >= th.dl_hours {
                let span = c.hour_span(&r);
                out.push(c.finding(
                    "detection_limit_hugging",
                    name,
                    span,
                    Severity::Warning,
                    json!({"detection_limit": dl, "band_high": round(hi, 3), "hours": r.len(), "hour_share": th.dl_hour_share}),
                    format!(
                        "{name} 自 {} 起连续 {} 小时贴近检出限（{dl}–{:.2} mg/m³）；数据可能被截断或分析仪失效",
                        cst(span.0), r.len(), hi
                    ),
                    format!(
                        "{name} sat at or just above the detection limit ({dl}–{:.2} mg/m3) for {} consecutive hours from {}: truncated data or a failed analyser",
                        hi, r.len(), cst(span.0)
                    ),
                ));
            }
        }
    }
    out
}

/// `limit_hugging` (贴限): most valid running hours of a day in [0.8·L, L) and almost none at or
/// above L. Cannot tell a unit truly run at the edge of its limit (real operation at the limit
/// spills over it now and then, which this rule counts) from a capped one.
pub fn limit_hugging(c: &Context<'_>) -> Vec<Finding> {
    let th = c.th;
    let mut out = Vec::new();
    let mut days: BTreeMap<i64, Vec<&Hour>> = BTreeMap::new();
    for h in c.hours.iter().filter(|h| h.running()) {
        days.entry(cst_day(h.start_ms)).or_default().push(h);
    }
    for (day, hours) in days {
        for (p, name) in POLLUTANTS.iter().enumerate() {
            let Some(limit) = c.s.unit.limits[p] else {
                continue;
            };
            let v: Vec<f64> = hours.iter().filter_map(|h| h.corrected[p]).collect();
            if v.len() < th.hug_min_hours {
                continue;
            }
            let band = v
                .iter()
                .filter(|x| **x >= th.hug_low * limit && **x < limit)
                .count();
            let above = v.iter().filter(|x| **x >= limit).count();
            let n = v.len() as f64;
            if band as f64 >= th.hug_share * n && above as f64 <= th.hug_above_max * n {
                out.push(c.finding(
                    "limit_hugging",
                    name,
                    (day, day + DAY_MS),
                    Severity::Warning,
                    json!({"limit": limit, "valid_hours": v.len(), "hours_in_band": band, "hours_above": above,
                           "band": [round(th.hug_low * limit, 2), limit]}),
                    format!(
                        "{name} 在 {} 的 {} 个有效小时中有 {band} 个落在限值 {limit} 的 {:.0}%–100% 之间，超标 {above} 个（贴限排放）",
                        &cst(day)[..10], v.len(), th.hug_low * 100.0
                    ),
                    format!(
                        "{name}: {band} of {} valid hours on {} sat between {:.0} % and 100 % of the limit {limit}, {above} above it (hugging the limit)",
                        v.len(), &cst(day)[..10], th.hug_low * 100.0
                    ),
                ));
            }
        }
    }
    out
}

/// The load band (10 % of capacity) of an hour, from its load, or its flow as a share of the
/// median flow.
fn load_band(c: &Context<'_>, h: &Hour) -> Option<i64> {
    let share = match h.load_mw {
        Some(l) => l / c.s.unit.capacity_mw,
        None => h.flow? / c.median_flow? * 0.75,
    };
    Some((share * 10.0).floor() as i64)
}

/// `o2_dilution`: (a) hours whose O2 is far above the unit's own band for its load (median and MAD
/// of its history in that band); (b) an O2 step up coinciding with a drop of a raw pollutant while
/// its corrected value stays just under the limit. Cannot see dilution that keeps O2 within its
/// band (nitrogen instead of air lowers O2), nor a unit whose whole history is diluted.
pub fn o2_dilution(c: &Context<'_>) -> Vec<Finding> {
    let th = c.th;
    let mut out = Vec::new();
    let mut bands: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
    for h in c.hours.iter().filter(|h| h.running()) {
        if let (Some(b), Some(o2)) = (load_band(c, h), h.o2) {
            bands.entry(b).or_default().push(o2);
        }
    }
    let stats: BTreeMap<i64, (f64, f64)> = bands
        .into_iter()
        .filter(|(_, v)| v.len() >= th.o2_min_band_hours)
        .filter_map(|(b, mut v)| {
            let med = median(&mut v)?;
            let mut dev: Vec<f64> = v.iter().map(|x| (x - med).abs()).collect();
            Some((b, (med, 1.4826 * median(&mut dev)?)))
        })
        .collect();
    let above = |h: &Hour| -> Option<(f64, f64)> {
        if !h.running() {
            return None;
        }
        let b = load_band(c, h)?;
        let bound_of = |b: i64| {
            stats
                .get(&b)
                .map(|(med, sd)| med + (th.o2_k * sd).max(th.o2_min_excess))
        };
        // A band with too little history (full load is rare) borrows its neighbours' bound, the
        // higher of the two (the lower load's, whose O2 is higher): a wider band, never a
        // narrower one.
        let bound = bound_of(b).or_else(|| {
            [bound_of(b - 1), bound_of(b + 1)]
                .into_iter()
                .flatten()
                .reduce(f64::max)
        })?;
        h.o2.filter(|o| *o > bound).map(|o| (o, bound))
    };
    // An hour with too few minutes to judge (data lost to the network) does not break a run.
    for (r, hits) in c.bridged_hour_runs(|h| above(h).is_some(), |h| h.o2.is_none()) {
        if hits < th.o2_hours {
            continue;
        }
        let span = c.hour_span(&r);
        let peak = c.hours[r.clone()]
            .iter()
            .filter_map(|h| h.o2)
            .fold(f64::MIN, f64::max);
        let bound = above(&c.hours[r.start]).map(|x| x.1).unwrap_or_default();
        out.push(c.finding(
            "o2_dilution",
            "O2",
            span,
            Severity::Critical,
            json!({"o2_max": round(peak, 2), "band_upper": round(bound, 2), "hours": r.len(), "hours_above": hits}),
            format!(
                "自 {} 起 {} 小时烟气氧含量高达 {:.1}%，超出该机组同负荷下的正常上限 {:.1}%；疑似向采样管路掺入空气稀释",
                cst(span.0), r.len(), peak, bound
            ),
            format!(
                "O2 reached {:.1} % for {} hours from {}, above the unit's usual upper bound {:.1} % at that load: air may be let into the sample line",
                peak, r.len(), cst(span.0), bound
            ),
        ));
    }
    // (b) Steps: the 10 running minutes before and after each minute.
    let m = c.s.minutes;
    let mut i = 10;
    while i + 10 <= m.len() {
        let before = &m[i - 10..i];
        let after = &m[i..i + 10];
        let contiguous = m[i + 9].ts_ms - m[i - 10].ts_ms == 19 * MINUTE_MS;
        let all_run = (i - 10..i + 10).all(|k| c.running[k] && !m[k].calibration);
        let (o2b, o2a) = (
            mean(before.iter().filter_map(|x| x.o2)),
            mean(after.iter().filter_map(|x| x.o2)),
        );
        let mut hit = None;
        if let (true, true, Some(o2b), Some(o2a)) = (contiguous, all_run, o2b, o2a) {
            if o2a - o2b >= th.o2_step {
                for (p, name) in POLLUTANTS.iter().enumerate() {
                    let Some(limit) = c.s.unit.limits[p] else {
                        continue;
                    };
                    let rb = mean(before.iter().filter_map(|x| x.raw[p]));
                    let ra = mean(after.iter().filter_map(|x| x.raw[p]));
                    let ca = mean(after.iter().filter_map(|x| x.corrected[p]));
                    if let (Some(rb), Some(ra), Some(ca)) = (rb, ra, ca) {
                        if rb > 0.0
                            && (rb - ra) / rb >= th.o2_step_raw_drop
                            && ca >= th.hug_low * limit
                            && ca < limit
                        {
                            hit = Some((*name, o2b, o2a, rb, ra, ca, limit));
                            break;
                        }
                    }
                }
            }
        }
        if let Some((name, o2b, o2a, rb, ra, ca, limit)) = hit {
            let at = m[i].ts_ms;
            out.push(c.finding(
                "o2_dilution",
                name,
                (at - 10 * MINUTE_MS, at + 10 * MINUTE_MS),
                Severity::Critical,
                json!({"o2_before": round(o2b, 2), "o2_after": round(o2a, 2), "raw_before": round(rb, 2),
                       "raw_after": round(ra, 2), "corrected_after": round(ca, 2), "limit": limit}),
                format!(
                    "{} 氧含量由 {:.1}% 跃升至 {:.1}%，同时 {name} 实测值由 {:.1} 降至 {:.1} mg/m³，折算值 {:.1} 仍贴近限值 {limit}；疑似稀释",
                    cst(at), o2b, o2a, rb, ra, ca
                ),
                format!(
                    "At {} O2 stepped from {:.1} % to {:.1} % while raw {name} fell from {:.1} to {:.1} mg/m3 and its corrected value {:.1} stayed just under the limit {limit}: dilution",
                    cst(at), o2b, o2a, rb, ra, ca
                ),
            ));
            i += 20;
        } else {
            i += 1;
        }
    }
    out
}

/// `stopped_but_running`: minutes flagged stopped (F, 停运) while the load, or the flow and the
/// flue temperature, or the production facilities' electricity use (ST 44), say the unit runs.
/// Cannot see a stop declared with the physical channels falsified too, nor one shorter than
/// `stopped_minutes` (start-up and shut-down ramps).
pub fn stopped_but_running(c: &Context<'_>) -> Vec<Finding> {
    let th = c.th;
    let m = c.s.minutes;
    let mut out = Vec::new();
    for r in c.runs(|i| m[i].stopped && c.running[i]) {
        if r.len() < th.stopped_minutes {
            continue;
        }
        let span = c.span(&r);
        let load = mean(m[r.clone()].iter().filter_map(|x| x.load_mw));
        let flow = mean(m[r.clone()].iter().filter_map(|x| x.flow));
        let temp = mean(m[r.clone()].iter().filter_map(|x| x.temp));
        let shown = match load {
            Some(l) => (format!("负荷 {l:.0} MW"), format!("load {l:.0} MW")),
            None => (
                format!(
                    "烟气流量 {:.0} m³/h、烟温 {:.0} ℃",
                    flow.unwrap_or(0.0),
                    temp.unwrap_or(0.0)
                ),
                format!(
                    "flow {:.0} m3/h, flue temperature {:.0} °C",
                    flow.unwrap_or(0.0),
                    temp.unwrap_or(0.0)
                ),
            ),
        };
        out.push(c.finding(
            "stopped_but_running",
            "",
            span,
            Severity::Critical,
            json!({"minutes": r.len(), "load_mw": load.map(|x| round(x, 1)), "flow_m3_h": flow.map(|x| round(x, 0)),
                   "flue_temp_c": temp.map(|x| round(x, 1))}),
            format!(
                "自 {} 起 {} 分钟数据标记为停运（F），但{}表明机组在运行",
                cst(span.0),
                r.len(),
                shown.0
            ),
            format!(
                "Marked stopped (F) for {} minutes from {} while the unit ran ({})",
                r.len(),
                cst(span.0),
                shown.1
            ),
        ));
    }
    out
}

/// The flow at dry standard state the velocity and area give for minute `x`, m3/h.
fn flow_from_velocity(x: &Minute, area: f64, dry_standard: bool) -> Option<f64> {
    let actual = x.velocity? * area * 3600.0;
    if !dry_standard {
        return Some(actual);
    }
    let t = x.temp?;
    let moisture = x.moisture.unwrap_or(0.0);
    Some(actual * 273.15 / (273.15 + t) * (1.0 - moisture / 100.0))
}

/// `flow_inconsistent`: (a) the reported flow against velocity × the surveyed cross-section
/// (converted to the flow's state); (b) flow per MW outside the unit's own band (its median over
/// the series). Cannot see (a) without a velocity channel and a surveyed area, (b) without a load
/// channel, nor a flow understated since before the series began (its median is then the
/// understated one).
pub fn flow_inconsistent(c: &Context<'_>) -> Vec<Finding> {
    let th = c.th;
    let m = c.s.minutes;
    let mut out = Vec::new();
    if let Some(area) = c.s.unit.stack_area_m2 {
        let mut ratio: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
        for (i, x) in m.iter().enumerate() {
            if !c.running[i] {
                continue;
            }
            if let (Some(f), Some(e)) = (
                x.flow,
                flow_from_velocity(x, area, c.s.unit.flow_dry_standard),
            ) {
                if e > 0.0 {
                    ratio
                        .entry(x.ts_ms.div_euclid(HOUR_MS) * HOUR_MS)
                        .or_default()
                        .push(f / e);
                }
            }
        }
        let off: BTreeMap<i64, f64> = ratio
            .into_iter()
            .filter(|(_, v)| v.len() >= 45)
            .filter_map(|(h, mut v)| median(&mut v).map(|r| (h, r)))
            .filter(|(_, r)| (r - 1.0).abs() > th.flow_area_tolerance)
            .collect();
        for r in c.hour_runs(|h| off.contains_key(&h.start_ms)) {
            if r.len() < th.flow_hours.min(2) {
                continue;
            }
            let span = c.hour_span(&r);
            let k = off[&c.hours[r.start].start_ms];
            out.push(c.finding(
                "flow_inconsistent",
                "flue_flow",
                span,
                Severity::Critical,
                json!({"reported_over_velocity_area": round(k, 3), "stack_area_m2": area, "hours": r.len()}),
                format!(
                    "自 {} 起 {} 小时上报烟气流量为流速×截面积（{area} m²）的 {:.0}%；流量或截面积参数可能被改小",
                    cst(span.0), r.len(), k * 100.0
                ),
                format!(
                    "For {} hours from {} the reported flow was {:.0} % of velocity × the surveyed area ({area} m2): the flow or the declared area may be understated",
                    r.len(), cst(span.0), k * 100.0
                ),
            ));
        }
    }
    let per_mw = |h: &Hour| -> Option<f64> {
        let l = h.load_mw.filter(|l| *l >= 0.3 * c.s.unit.capacity_mw)?;
        h.running().then_some(h.flow? / l)
    };
    let mut v: Vec<f64> = c.hours.iter().filter_map(per_mw).collect();
    if v.len() < 24 {
        return out;
    }
    let Some(med) = median(&mut v) else {
        return out;
    };
    let outside =
        |h: &Hour| per_mw(h).is_some_and(|x| (x / med - 1.0).abs() > th.flow_per_mw_tolerance);
    for r in c.hour_runs(outside) {
        if r.len() < th.flow_hours {
            continue;
        }
        let span = c.hour_span(&r);
        let k = mean(c.hours[r.clone()].iter().filter_map(per_mw)).unwrap_or_default();
        out.push(c.finding(
            "flow_inconsistent",
            "flue_flow",
            span,
            Severity::Critical,
            json!({"flow_per_mw": round(k, 0), "usual_flow_per_mw": round(med, 0), "hours": r.len(),
                   "tolerance": th.flow_per_mw_tolerance}),
            format!(
                "自 {} 起 {} 小时单位负荷烟气流量 {:.0} m³/h/MW，偏离该机组常值 {:.0} 达 {:.0}%；流量可能被篡改（如截面积改小）",
                cst(span.0), r.len(), k, med, (k / med - 1.0) * 100.0
            ),
            format!(
                "For {} hours from {} the flow per MW was {:.0} m3/h/MW, {:+.0} % off the unit's usual {:.0}: the flow may be falsified (e.g. a smaller declared area)",
                r.len(), cst(span.0), k, (k / med - 1.0) * 100.0, med
            ),
        ));
    }
    out
}

/// `gap_before_exceedance`: data missing for at least `gap_minutes` right after a pollutant's
/// corrected value rose towards its limit, the unit running before and (when data resumes) after.
/// Cannot see a gap after values that were already high and flat (no rise), nor tell a true
/// communications fault that happened then from a deliberate one.
pub fn gap_before_exceedance(c: &Context<'_>) -> Vec<Finding> {
    let th = c.th;
    let m = c.s.minutes;
    let mut out = Vec::new();
    let gap_ms = th.gap_minutes as i64 * MINUTE_MS;
    for i in 75..=m.len() {
        let next = m.get(i).map(|x| x.ts_ms).unwrap_or(c.s.until_ms);
        let last = m[i - 1].ts_ms;
        if next - last - MINUTE_MS < gap_ms {
            continue;
        }
        if m.get(i).is_some() && !c.running[i] {
            // Data resumes with the unit stopped: a trip, not a hidden hour.
            continue;
        }
        let recent = &m[i - 15..i];
        let earlier = &m[i - 75..i - 15];
        if !(i - 15..i).all(|k| c.running[k]) {
            continue;
        }
        for (p, name) in POLLUTANTS.iter().enumerate() {
            let Some(limit) = c.s.unit.limits[p] else {
                continue;
            };
            let (Some(r), Some(e)) = (
                mean(recent.iter().filter_map(|x| x.corrected[p])),
                mean(earlier.iter().filter_map(|x| x.corrected[p])),
            ) else {
                continue;
            };
            if r >= th.gap_rise_share * limit && r >= th.gap_rise_factor * e {
                let span = (last + MINUTE_MS, next);
                let minutes = (next - last - MINUTE_MS) / MINUTE_MS;
                out.push(c.finding(
                    "gap_before_exceedance",
                    name,
                    span,
                    Severity::Critical,
                    json!({"last_15min_corrected": round(r, 2), "hour_before_corrected": round(e, 2),
                           "limit": limit, "gap_minutes": minutes, "resumed": i < m.len()}),
                    format!(
                        "{name} 折算浓度升至 {:.1} mg/m³（限值 {limit}，此前一小时 {:.1}）后，自 {} 起数据缺失 {minutes} 分钟；疑似超标时段未上传",
                        r, e, cst(span.0)
                    ),
                    format!(
                        "Data stopped for {minutes} minutes from {} right after corrected {name} rose to {:.1} mg/m3 (limit {limit}; {:.1} the hour before): exceedance minutes may be withheld",
                        cst(span.0), r, e
                    ),
                ));
                break;
            }
        }
    }
    out
}

/// Minute of day of each run's start, and its CST day.
fn calibration_runs(c: &Context<'_>) -> Vec<std::ops::Range<usize>> {
    let m = c.s.minutes;
    c.runs(|i| m[i].calibration)
        .into_iter()
        .filter(|r| r.len() >= c.th.cal_min_minutes)
        .collect()
}

/// Calibration windows learned from the series: times of day (± 30 minutes) at which flagged
/// calibrations started on at least `cal_learn_min_days` different days.
pub fn learned_windows(c: &Context<'_>) -> Vec<Window> {
    let m = c.s.minutes;
    let starts: Vec<(i64, u32)> = calibration_runs(c)
        .iter()
        .map(|r| {
            (
                cst_day(m[r.start].ts_ms),
                cst_minute_of_day(m[r.start].ts_ms),
            )
        })
        .collect();
    let mut out: Vec<Window> = Vec::new();
    for &(_, s) in &starts {
        let w = Window {
            start_min: (s + 1440 - 30) % 1440,
            end_min: (s + 30) % 1440,
        };
        let days: BTreeSet<i64> = starts
            .iter()
            .filter(|(_, t)| w.contains(*t, 0))
            .map(|(d, _)| *d)
            .collect();
        if days.len() >= c.th.cal_learn_min_days && !out.iter().any(|o| o.contains(s, 0)) {
            out.push(w);
        }
    }
    out
}

/// `calibration_outside_window`: C-flagged runs, or unflagged zero or span plateaus while the unit
/// runs, starting outside the unit's calibration windows (declared, else learned). Cannot see a
/// calibration inside a window that was misused, nor judge flagged runs when no schedule is
/// declared and none can be learned (fewer than `cal_learn_min_days` days of calibrations).
pub fn calibration_outside_window(c: &Context<'_>) -> Vec<Finding> {
    let th = c.th;
    let m = c.s.minutes;
    let mut out = Vec::new();
    let windows = if c.s.unit.calibration.is_empty() {
        learned_windows(c)
    } else {
        c.s.unit.calibration.clone()
    };
    let inside = |ts: i64| {
        windows
            .iter()
            .any(|w| w.contains(cst_minute_of_day(ts), th.cal_slack_minutes))
    };
    let declared = if c.s.unit.calibration.is_empty() {
        "learned"
    } else {
        "declared"
    };
    let shown: Vec<String> = windows
        .iter()
        .map(|w| {
            format!(
                "{:02}:{:02}–{:02}:{:02}",
                w.start_min / 60,
                w.start_min % 60,
                w.end_min / 60,
                w.end_min % 60
            )
        })
        .collect();
    if !windows.is_empty() {
        for r in calibration_runs(c) {
            let span = c.span(&r);
            if inside(span.0) {
                continue;
            }
            out.push(c.finding(
                "calibration_outside_window",
                "",
                span,
                Severity::Warning,
                json!({"minutes": r.len(), "kind": "flagged", "windows": shown, "schedule": declared}),
                format!(
                    "{} 起 {} 分钟校准（C 标记）不在该机组的校准时段（{}）内",
                    cst(span.0),
                    r.len(),
                    shown.join("、")
                ),
                format!(
                    "A {}-minute calibration (flag C) from {} is outside the unit's calibration windows ({}, {declared})",
                    r.len(),
                    cst(span.0),
                    shown.join(", ")
                ),
            ));
        }
    }
    // Unflagged plateaus at zero or at the span gas, while the unit runs.
    for (p, name) in POLLUTANTS.iter().enumerate() {
        let range = c.s.unit.ranges[p];
        let tol = 0.01 * range;
        for (level, kind) in [(0.0, "zero"), (th.cal_span_share * range, "span")] {
            let at = |i: usize| {
                c.running[i]
                    && !m[i].calibration
                    && m[i].raw[p].is_some_and(|v| (v - level).abs() <= tol)
            };
            for r in c.runs(at) {
                if r.len() < th.cal_min_minutes.max(5) {
                    continue;
                }
                let span = c.span(&r);
                if inside(span.0) && !windows.is_empty() {
                    continue;
                }
                out.push(c.finding(
                    "calibration_outside_window",
                    name,
                    span,
                    Severity::Warning,
                    json!({"minutes": r.len(), "kind": kind, "level": round(level, 2), "windows": shown, "schedule": declared}),
                    format!(
                        "{name} 自 {} 起 {} 分钟停在{}点（{:.1} mg/m³），无校准标记、机组运行中、不在校准时段内",
                        cst(span.0), r.len(), if kind == "zero" { "零" } else { "量程" }, level
                    ),
                    format!(
                        "{name} sat at the {kind} level ({:.1} mg/m3) for {} minutes from {} while the unit ran, unflagged and outside the calibration windows",
                        level, r.len(), cst(span.0)
                    ),
                ));
            }
        }
    }
    out
}

/// `parameter_change`: a CN 3020 site parameter declared with a new value. Cannot judge whether
/// the new value is right: that is for the inspector (the finding carries both values).
pub fn parameter_change(c: &Context<'_>) -> Vec<Finding> {
    c.s.params
        .iter()
        .filter_map(|p| {
            let before = p.before.as_ref()?;
            let (b, a) = (before.parse::<f64>().ok(), p.after.parse::<f64>().ok());
            let shrank = matches!((b, a), (Some(b), Some(a)) if a < b);
            let what = if p.pol.is_empty() {
                p.code.clone()
            } else {
                format!("{} {}", p.pol, p.code)
            };
            Some(c.finding(
                "parameter_change",
                &p.code,
                (p.at_ms, p.at_ms + MINUTE_MS),
                if shrank { Severity::Critical } else { Severity::Warning },
                json!({"pol": p.pol, "code": p.code, "before": before, "after": p.after,
                       "change": b.zip(a).map(|(b, a)| if b != 0.0 { round((a - b) / b, 4) } else { 0.0 })}),
                format!(
                    "数采仪于 {} 将现场参数 {what} 由 {before} 改为 {}{}",
                    cst(p.at_ms),
                    p.after,
                    if shrank { "（变小：可能低估排放量）" } else { "" }
                ),
                format!(
                    "The logger changed site parameter {what} from {before} to {} at {}{}",
                    p.after,
                    cst(p.at_ms),
                    if shrank { " (smaller: emissions may be understated)" } else { "" }
                ),
            ))
        })
        .collect()
}

/// `repeated_day`: a day's raw pollutant minutes repeating an earlier day's (the same values at the
/// same times of day). Cannot see a copy shifted in time or rescaled, nor one of a day older than
/// `repeated_lookback_days`; a constant day repeating a constant day is `constant_value`'s.
pub fn repeated_day(c: &Context<'_>) -> Vec<Finding> {
    let th = c.th;
    let m = c.s.minutes;
    let mut out = Vec::new();
    let days = c.days();
    // Per day and pollutant: minute of day → value (running, not calibrating).
    let series: BTreeMap<i64, [BTreeMap<u32, f64>; 3]> = days
        .iter()
        .map(|(d, idx)| {
            let mut per: [BTreeMap<u32, f64>; 3] = Default::default();
            for &i in idx {
                if !c.running[i] || m[i].calibration {
                    continue;
                }
                for (p, s) in per.iter_mut().enumerate() {
                    if let Some(v) = m[i].raw[p] {
                        s.insert(cst_minute_of_day(m[i].ts_ms), v);
                    }
                }
            }
            (*d, per)
        })
        .collect();
    for (day, per) in &series {
        for (p, name) in POLLUTANTS.iter().enumerate() {
            let today = &per[p];
            let distinct: BTreeSet<u64> = today.values().map(|v| v.to_bits()).collect();
            if distinct.len() < 10 {
                continue;
            }
            for k in 1..=th.repeated_lookback_days as i64 {
                let Some(earlier) = series.get(&(day - k * DAY_MS)).map(|e| &e[p]) else {
                    continue;
                };
                let (mut n, mut equal) = (0usize, 0usize);
                for (t, v) in today {
                    if let Some(w) = earlier.get(t) {
                        n += 1;
                        equal += usize::from((v - w).abs() <= th.repeated_epsilon);
                    }
                }
                if n >= th.repeated_min_minutes && equal as f64 >= th.repeated_share * n as f64 {
                    let src = &cst(day - k * DAY_MS)[..10];
                    out.push(c.finding(
                        "repeated_day",
                        name,
                        (*day, day + DAY_MS),
                        Severity::Critical,
                        json!({"copied_from": src, "minutes_compared": n, "minutes_equal": equal}),
                        format!(
                            "{name} 在 {} 的 {n} 个分钟值中有 {equal} 个与 {src} 同一时刻完全相同；疑似复制历史数据",
                            &cst(*day)[..10]
                        ),
                        format!(
                            "{name} on {}: {equal} of {n} minute values equal {src}'s at the same times of day: copied data",
                            &cst(*day)[..10]
                        ),
                    ));
                    break;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
