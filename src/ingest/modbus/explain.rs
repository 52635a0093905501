//! Modbus errors in words a field technician acts on: the exception code named (Modbus
//! Application Protocol v1.1b3 §7) with what to check, and connection failures with where to look.
//!
//! The poller and tokio-modbus report exceptions by their Rust names (`GatewayTargetDevice`), and
//! some gateways answer an exception with a function code tokio-modbus does not match
//! ("mismatching function codes: 3 Err(ExceptionResponse { … GatewayTargetDevice })"); both are
//! recognised here by the name inside the message.

use serde::Serialize;

/// What went wrong and what to check, Chinese first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    /// The Modbus exception code, when the device or gateway answered with one.
    pub code: Option<u8>,
    /// Short name, as the specification gives it ("gateway target device failed to respond").
    pub name: &'static str,
    pub hint_zh: &'static str,
    pub hint_en: &'static str,
}

/// (name in the message, code, specification's name, hint zh, hint en)
const EXCEPTIONS: &[(&str, u8, &str, &str, &str)] = &[
    (
        "IllegalFunction",
        0x01,
        "illegal function",
        "设备不支持该功能码：检查设备档案中的寄存器类型（保持/输入/线圈）",
        "the device does not support this function: check the register kind (holding, input, coil) in the profile",
    ),
    (
        "IllegalDataAddress",
        0x02,
        "illegal data address",
        "寄存器地址不存在：检查档案中的地址（手册地址常从 1 或 40001 起算，Modbus 报文从 0 起）",
        "no such register: check the addresses in the profile (manuals often count from 1 or 40001, the protocol from 0)",
    ),
    (
        "IllegalDataValue",
        0x03,
        "illegal data value",
        "请求的数量或数值不被接受：检查一次读取的寄存器个数（可设 single_reads = true）",
        "the count or value requested is not accepted: check how many registers are read at once (try single_reads = true)",
    ),
    (
        "ServerDeviceFailure",
        0x04,
        "server device failure",
        "设备内部故障：查看分析仪的报警与状态",
        "the device failed internally: look at the analyser's own alarms and status",
    ),
    (
        "Acknowledge",
        0x05,
        "acknowledge (still processing)",
        "设备仍在处理：稍后重试，或延长超时",
        "the device is still processing: retry later or lengthen the timeout",
    ),
    (
        "ServerDeviceBusy",
        0x06,
        "server device busy",
        "设备忙：延长采集周期，或避免多个主站同时访问",
        "the device is busy: poll less often, or keep other masters off the bus",
    ),
    (
        "MemoryParityError",
        0x08,
        "memory parity error",
        "设备存储校验错误：需由厂家检修",
        "the device's memory failed its parity check: the vendor must service it",
    ),
    (
        "GatewayPathUnavailable",
        0x0A,
        "gateway path unavailable",
        "网关没有通往该设备的路径：检查网关的串口配置与端口映射",
        "the gateway has no path to the device: check the gateway's serial port settings and port mapping",
    ),
    (
        "GatewayTargetDevice",
        0x0B,
        "gateway target device failed to respond",
        "网关后的设备无应答：检查从站地址（unit_id）、接线与波特率/校验位",
        "the device behind the gateway did not answer: check the unit id, the wiring and the baud rate/parity",
    ),
];

impl Explanation {
    /// "0x0B gateway target device failed to respond: 检查… / check …" (the code only for an
    /// exception).
    pub fn summary(&self) -> String {
        match self.code {
            Some(c) => format!(
                "0x{c:02X} {}: {} / {}",
                self.name, self.hint_zh, self.hint_en
            ),
            None => format!("{}: {} / {}", self.name, self.hint_zh, self.hint_en),
        }
    }
}

/// The explanation of a poll or connection error message, when one is known.
pub fn explain(message: &str) -> Option<Explanation> {
    for (needle, code, name, zh, en) in EXCEPTIONS {
        if message.contains(needle) {
            return Some(Explanation {
                code: Some(*code),
                name,
                hint_zh: zh,
                hint_en: en,
            });
        }
    }
    let m = message.to_ascii_lowercase();
    let known: &[(&str, &str, &str, &str)] = &[
        (
            "connection refused",
            "connection refused",
            "该地址无服务监听：检查 IP 与端口（Modbus TCP 通常为 502），以及网关是否上电",
            "nothing listens at that address: check the IP and port (Modbus TCP is usually 502) and that the gateway is powered",
        ),
        (
            "connect timed out",
            "no connection",
            "连接超时：检查网络、防火墙与地址",
            "the connection timed out: check the network, firewall and address",
        ),
        (
            "timed out",
            "no answer in time",
            "设备无应答：检查从站地址、接线、波特率，或延长超时",
            "no answer in time: check the unit id, wiring and baud rate, or lengthen the timeout",
        ),
        (
            "no such file",
            "serial port missing",
            "串口不存在：检查串口设备名（如 /dev/ttyUSB0）",
            "the serial port does not exist: check its device name (e.g. /dev/ttyUSB0)",
        ),
        (
            "short answer",
            "short answer",
            "应答数据不完整：检查档案中的寄存器数量与数据类型",
            "the answer was shorter than asked: check the profile's counts and data types",
        ),
    ];
    known
        .iter()
        .find(|(n, ..)| m.contains(n))
        .map(|(_, name, zh, en)| Explanation {
            code: None,
            name,
            hint_zh: zh,
            hint_en: en,
        })
}

/// A message with its explanation appended, for logs and the device list.
pub fn describe(message: &str) -> String {
    match explain(message) {
        Some(e) if e.code.is_some() => format!("Modbus exception {}", e.summary()),
        Some(e) => format!("{message}: {} / {}", e.hint_zh, e.hint_en),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The message of the wrong-unit-id case, as tokio-modbus 0.17 formats it
    /// (`Error::FunctionCode`'s "mismatching function codes: {request} {result:?}").
    #[test]
    fn a_wrong_unit_id_behind_a_gateway_is_named_0x0b() {
        let msg = "input@0+4: transport: mismatching function codes: 3 Err(ExceptionResponse { function: Custom(0), exception: GatewayTargetDevice })";
        let e = explain(msg).unwrap();
        assert_eq!(e.code, Some(0x0B));
        assert!(e.hint_en.contains("unit id"));
        assert!(describe(msg)
            .starts_with("Modbus exception 0x0B gateway target device failed to respond"));
    }

    #[test]
    fn each_exception_by_its_code_and_connection_errors_by_their_cause() {
        assert_eq!(explain("IllegalDataAddress").unwrap().code, Some(0x02));
        assert_eq!(explain("GatewayPathUnavailable").unwrap().code, Some(0x0A));
        let refused = explain("Connection refused (os error 111)").unwrap();
        assert_eq!((refused.code, refused.name), (None, "connection refused"));
        assert!(explain("something else").is_none());
        assert_eq!(describe("something else"), "something else");
    }
}
