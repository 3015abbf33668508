"""Schema2 live migration (area I): the options of each migration step (initialize, start, transfer, cancel,
finalize), memory-transfer throttling and compression, and the migration notifications."""

from __future__ import annotations

from typing import Any

from hcsshim.gojson import ANY, BOOL, BYTES, F64, STR, TIME, U8, U32, U64, Struct, field, opt

__all__ = [
    "BlackoutExitedEventDetails",
    "CompatibilityInfo",
    "MemoryMigrationTransferThrottleParams",
    "MigrationCancelOptions",
    "MigrationCompressionSettings",
    "MigrationEvent",
    "MigrationFinalOperation",
    "MigrationFinalizedOptions",
    "MigrationInitializeOptions",
    "MigrationMemoryTransport",
    "MigrationNetworkSettings",
    "MigrationOrigin",
    "MigrationResult",
    "MigrationStartOptions",
    "MigrationTransferOptions",
    "OperationSystemMigrationNotificationInfo",
    "StartOptions",
]


class MigrationOrigin:
    """The side of a live migration a step runs on."""

    SOURCE = "Source"
    DESTINATION = "Destination"


class MigrationMemoryTransport:
    """How a live migration copies memory."""

    TCP = "TCP"


class MigrationFinalOperation:
    """What a finalized live migration does with the VM."""

    RESUME = "Resume"
    STOP = "Stop"


class MigrationEvent:
    """The events of a live-migration notification."""

    UNKNOWN = "Unknown"
    MIGRATION_DONE = "MigrationDone"
    BLACKOUT_STARTED = "BlackoutStarted"
    OFFLINE_DONE = "OfflineDone"
    BLACKOUT_EXITED = "BlackoutExited"
    SETUP_DONE = "SetupDone"
    TRANSFER_IN_PROGRESS = "TransferInProgress"
    MIGRATION_RECOVERY_DONE = "MigrationRecoveryDone"
    MIGRATION_FAILED = "MigrationFailed"


class MigrationResult:
    """The results of a live-migration notification."""

    INVALID = "Invalid"
    SUCCESS = "Success"
    MIGRATION_CANCELLED = "MigrationCancelled"
    GUEST_INITIATED_CANCELLATION = "GuestInitiatedCancellation"
    SOURCE_MIGRATION_FAILED = "SourceMigrationFailed"
    DESTINATION_MIGRATION_FAILED = "DestinationMigrationFailed"
    MIGRATION_RECOVERY_FAILED = "MigrationRecoveryFailed"


class MemoryMigrationTransferThrottleParams(Struct):
    """How a live migration throttles its memory transfer."""

    skip_throttling: bool | None = field("SkipThrottling", opt(BOOL))
    throttling_scale: float | None = field("ThrottlingScale", opt(F64))
    minimum_throttle_percentage: int | None = field("MinimumThrottlePercentage", opt(U8))
    target_number_of_brownout_transfer_passes: int | None = field("TargetNumberOfBrownoutTransferPasses", opt(U32))
    starting_brownout_pass_number_for_throttling: int | None = field(
        "StartingBrownoutPassNumberForThrottling", opt(U32))
    maximum_number_of_brownout_transfer_passes: int | None = field("MaximumNumberOfBrownoutTransferPasses", opt(U32))
    target_blackout_transfer_time: int | None = field("TargetBlackoutTransferTime", opt(U32))
    blackout_time_threshold_for_cancelling_migration: int | None = field(
        "BlackoutTimeThresholdForCancellingMigration", opt(U32))


class MigrationCompressionSettings(Struct):
    """Compression of a live migration's memory transfer."""

    throttle_worker_count: int | None = field("ThrottleWorkerCount", opt(U32))


class CompatibilityInfo(Struct):
    """Opaque compatibility data exchanged between migration source and destination."""

    data: bytes = field("Data", BYTES)


class MigrationInitializeOptions(Struct):
    """Options of a live migration's initialization on either side."""

    origin: str = field("Origin", STR)
    memory_transport: str = field("MemoryTransport", STR)
    memory_transfer_throttle_params: MemoryMigrationTransferThrottleParams | None = field(
        "MemoryTransferThrottleParams", MemoryMigrationTransferThrottleParams)
    compression_settings: MigrationCompressionSettings | None = field(
        "CompressionSettings", MigrationCompressionSettings)
    checksum_verification: bool = field("ChecksumVerification", BOOL)
    perf_tracing_enabled: bool = field("PerfTracingEnabled", BOOL)
    cancel_if_blackout_threshold_exceeds: bool = field("CancelIfBlackoutThresholdExceeds", BOOL)
    prepare_memory_transfer_mode: bool = field("PrepareMemoryTransferMode", BOOL)
    compatibility_data: CompatibilityInfo | None = field("CompatibilityData", CompatibilityInfo)


class MigrationFinalizedOptions(Struct):
    """How a live migration ends on one side: resume or stop the VM."""

    origin: str = field("Origin", STR)
    finalized_operation: str = field("FinalizedOperation", STR)


class MigrationNetworkSettings(Struct):
    """The network session a live migration runs on."""

    session_id: int = field("SessionId", U32)


class MigrationStartOptions(Struct):
    """Options of the destination's start in a live migration."""

    network_settings: MigrationNetworkSettings | None = field("NetworkSettings", MigrationNetworkSettings)


class MigrationTransferOptions(Struct):
    """Options of a live migration's transfer."""

    origin: str = field("Origin", STR)


class MigrationCancelOptions(Struct):
    """Options of a live migration's cancellation."""

    origin: str = field("Origin", STR)


class StartOptions(Struct):
    """Options of HcsStartComputeSystem: the destination's migration options."""

    destination_migration_options: MigrationStartOptions | None = field(
        "DestinationMigrationOptions", MigrationStartOptions)


class OperationSystemMigrationNotificationInfo(Struct):
    """A live-migration event: origin, event, result and details."""

    origin: str = field("Origin", STR)
    event: str = field("Event", STR)
    result: str = field("Result", STR)
    additional_details: Any = field("AdditionalDetails", ANY)


class BlackoutExitedEventDetails(Struct):
    """Details of a BlackoutExited event: how long the blackout lasted and when it ended."""

    blackout_duration_milliseconds: int = field("BlackoutDurationMilliseconds", U64)
    blackout_stop_timestamp: str = field("BlackoutStopTimestamp", TIME)
