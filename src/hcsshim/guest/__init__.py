"""The Linux guest agent (GCS): serves the bridge protocol inside the utility VM and runs containers with runc.

Standard library only (it runs in the VM): `main` (the `gcs` command), `server` (one bridge connection),
`containers` (containers and processes), `stdio` (relays), `storage` and `network` (ModifySettings).
"""
