"""The IPNI data model: CIDs and multihashes, the DAG-CBOR and DAG-JSON codecs, the ingest
schema (Advertisement, EntryChunk), metadata, and block inspection.

Rules: pure code. It imports no I/O library (trio, httpx, h11, libp2p, plyvel), enforced by
import-linter; it decodes from the raw bytes it was given and never re-encodes to check a CID.
"""
