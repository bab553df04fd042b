"""A reader of W&B offline run files (``<run>/wandb/offline-run-*/run-<id>.wandb``), shared by
the tests: the records W&B wrote (``wandb_records``) and the run as ``wandb.Api()`` would serve
it (``OfflineRun``)."""

import json
import struct

BLOCK = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def wandb_records(path) -> list:
    """The records of a W&B offline run file (``run-<id>.wandb``), decoded with W&B's own
    protobuf schema (``wandb.proto.wandb_internal_pb2.Record``). The framing is LevelDB's log
    format: a 7-byte file header (``:W&B``, magic, version), then 32 KiB blocks of chunks, each
    a 7-byte header (CRC-32C, length, type: full, first, middle or last piece of a record) and
    its bytes; a block's last < 7 bytes are padding. wandb 0.31 ships no Python reader of these
    files (wandb-core reads them, to sync them to a server)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", path
    records, pieces, pos = [], [], 7
    while pos + 7 <= len(data):
        if BLOCK - pos % BLOCK < 7:
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:  # the zero-filled rest of the last block
            break
        pieces = [] if kind in (FULL, FIRST) else pieces
        pieces.append(data[pos + 7:pos + 7 + length])
        pos += 7 + length
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(b"".join(pieces))
            records.append(record)
    return records


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


class OfflineRun:
    """A W&B run as ``wandb.Api().runs(...)`` serves it (``wandb.apis.public.Run``: ``name``,
    ``state``, ``summary``, ``config``, ``history``), built from the records of its offline run
    file as the server builds it from them: the config and summary are the run's updates applied
    in order, the history its logged rows, the state "finished" after an exit record with code
    0. ``history(keys=...)`` returns the rows that hold every key, with only those keys and
    ``_step`` (what the public API's sampled history does)."""

    def __init__(self, path):
        self.config, self.summary, self.rows, self.state = {}, {}, [], "running"
        for record in wandb_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                self.name = record.run.display_name or record.run.run_id
                updates = record.run.config.update
            elif kind == "config":
                updates = record.config.update
            else:
                updates = []
            self.config.update({_key(u): json.loads(u.value_json) for u in updates})
            if kind == "summary":
                self.summary.update({_key(u): json.loads(u.value_json)
                                     for u in record.summary.update})
            elif kind == "history":
                self.rows.append({_key(i): json.loads(i.value_json) for i in record.history.item})
            elif kind == "exit":
                self.state = "finished" if record.exit.exit_code == 0 else "failed"

    def history(self, samples=500, keys=None, x_axis="_step", pandas=True, stream="default"):
        assert pandas is False and keys
        return [{k: row[k] for k in ("_step", *keys)} for row in self.rows
                if all(k in row for k in keys)]


