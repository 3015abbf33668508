"""Schema2 firmware, chipset, platform and security (area E): Chipset (UEFI, Linux direct boot, a firmware file,
SMBIOS serials), SecuritySettings and IsolationSettings, the Win32 time structures, crash reporting and the guest
connection settings."""

from __future__ import annotations

from hcsshim.gojson import BOOL, BYTES, I32, I64, STR, Struct, field, opt

__all__ = [
    "Chipset",
    "FirmwareFile",
    "GuestConnection",
    "GuestCrashReporting",
    "IsolationSettings",
    "LinuxKernelDirect",
    "SecuritySettings",
    "SystemTime",
    "TimeZoneInformation",
    "Uefi",
    "UefiBootEntry",
    "WindowsCrashReporting",
]


class UefiBootEntry(Struct):
    """A UEFI boot entry: the device and path to boot, and the data passed to it."""

    device_type: str = field("DeviceType", STR)
    device_path: str = field("DevicePath", STR)
    disk_number: int = field("DiskNumber", I32)
    optional_data: str = field("OptionalData", STR)
    vmb_fs_root_path: str = field("VmbFsRootPath", STR)


class Uefi(Struct):
    """UEFI firmware settings: secure boot template, debugger, console and the entry to boot."""

    enable_debugger: bool = field("EnableDebugger", BOOL)
    apply_secure_boot_template: str = field("ApplySecureBootTemplate", STR)
    secure_boot_template_id: str = field("SecureBootTemplateId", STR)
    boot_this: UefiBootEntry | None = field("BootThis", UefiBootEntry)
    console: str = field("Console", STR)


class LinuxKernelDirect(Struct):
    """Direct Linux boot: the kernel, initrd and kernel command line (no firmware)."""

    kernel_file_path: str = field("KernelFilePath", STR)
    init_rd_path: str = field("InitRdPath", STR)
    kernel_cmd_line: str = field("KernelCmdLine", STR)


class FirmwareFile(Struct):
    """A custom firmware image's parameters (base64 bytes on the wire)."""

    parameters: bytes = field("Parameters", BYTES)


class Chipset(Struct):
    """A VM's chipset: firmware (UEFI or Linux direct boot) and SMBIOS serial numbers."""

    uefi: Uefi | None = field("Uefi", Uefi)
    is_num_lock_disabled: bool = field("IsNumLockDisabled", BOOL)
    base_board_serial_number: str = field("BaseBoardSerialNumber", STR)
    chassis_serial_number: str = field("ChassisSerialNumber", STR)
    chassis_asset_tag: str = field("ChassisAssetTag", STR)
    use_utc: bool = field("UseUtc", BOOL)
    linux_kernel_direct: LinuxKernelDirect | None = field("LinuxKernelDirect", LinuxKernelDirect)
    firmware_file: FirmwareFile | None = field("FirmwareFile", FirmwareFile)


class IsolationSettings(Struct):
    """A confidential VM's isolation: the type (e.g. SecureNestedPaging), debugging and launch data."""

    isolation_type: str = field("IsolationType", STR)
    debug_host: str = field("DebugHost", STR)
    debug_port: int = field("DebugPort", I64)
    launch_data: str = field("LaunchData", STR)
    hcl_enabled: bool | None = field("HclEnabled", opt(BOOL))


class SecuritySettings(Struct):
    """A VM's security settings: a virtual TPM and isolation."""

    enable_tpm: bool = field("EnableTpm", BOOL)
    isolation: IsolationSettings | None = field("Isolation", IsolationSettings)


class SystemTime(Struct):
    """A Win32 SYSTEMTIME: a date and time split into fields."""

    year: int = field("Year", I32)
    month: int = field("Month", I32)
    day_of_week: int = field("DayOfWeek", I32)
    day: int = field("Day", I32)
    hour: int = field("Hour", I32)
    minute: int = field("Minute", I32)
    second: int = field("Second", I32)
    milliseconds: int = field("Milliseconds", I32)


class TimeZoneInformation(Struct):
    """A Win32 TIME_ZONE_INFORMATION: bias, standard and daylight names and dates."""

    bias: int = field("Bias", I32)
    standard_name: str = field("StandardName", STR)
    standard_date: SystemTime | None = field("StandardDate", SystemTime)
    standard_bias: int = field("StandardBias", I32)
    daylight_name: str = field("DaylightName", STR)
    daylight_date: SystemTime | None = field("DaylightDate", SystemTime)
    daylight_bias: int = field("DaylightBias", I32)


class WindowsCrashReporting(Struct):
    """Where and how a Windows guest's crash dump is written."""

    dump_file_name: str = field("DumpFileName", STR)
    max_dump_size: int = field("MaxDumpSize", I64)
    dump_type: str = field("DumpType", STR)


class GuestCrashReporting(Struct):
    """Guest crash reporting settings (Windows guests)."""

    windows_crash_settings: WindowsCrashReporting | None = field("WindowsCrashSettings", WindowsCrashReporting)


class GuestConnection(Struct):
    """How HCS connects to the guest: over vsock, and whether it survives suspend."""

    use_vsock: bool = field("UseVsock", BOOL)
    use_connected_suspend: bool = field("UseConnectedSuspend", BOOL)
