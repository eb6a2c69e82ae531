#!/usr/bin/env python3
"""visrec_client: an example Python client of visrec's featured and rankd.

It uses stubs generated from proto/ (gen.sh writes them; nothing generated
is committed) and shows the four things a backend service needs: top-k
recommendations for one user (Recommend) or many (RecommendBatch), scores of
given items (Score), and sending a folder of JPEGs to featured (PutItems).

    ./gen.sh /tmp/visrec-py            # once: the stubs, into a folder
    export VISREC_PY_GEN=/tmp/visrec-py
    ./visrec_client.py --rankd 127.0.0.1:7001 recommend --user u1 -k 10
    ./visrec_client.py --featured 127.0.0.1:7000 --token-file tok ingest data/

As a library:

    from visrec_client import Client
    c = Client(featured="127.0.0.1:7000", rankd="127.0.0.1:7001")
    for item in c.recommend("u1", k=10).items:
        print(item.item_id, item.score)

Errors are grpc.RpcError: e.code() is the status the daemon sent (e.g.
grpc.StatusCode.INVALID_ARGUMENT), e.details() its message, which names
the field and what to do.
"""

import argparse
import json
import os
import sys

import grpc


def _import_stubs(gen_dir):
    """Imports the generated modules from gen_dir (gen.sh's output)."""
    if gen_dir:
        sys.path.insert(0, gen_dir)
    try:
        from visrec.v1 import featured_pb2, featured_pb2_grpc, rankd_pb2, rankd_pb2_grpc
    except ImportError as e:
        raise SystemExit(
            "visrec_client: cannot import the generated stubs (%s); run gen.sh DIR and pass "
            "--gen DIR or set VISREC_PY_GEN=DIR" % e)
    return featured_pb2, featured_pb2_grpc, rankd_pb2, rankd_pb2_grpc


_gen = os.environ.get("VISREC_PY_GEN") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen")
if "--gen" in sys.argv[:-1]:
    _gen = sys.argv[sys.argv.index("--gen") + 1]
featured_pb2, featured_pb2_grpc, rankd_pb2, rankd_pb2_grpc = _import_stubs(_gen)

# The daemons' replies (GetVectors chunks, big tables) can pass gRPC's 4 MiB
# default; the daemons themselves allow 16 MiB.
_CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 64 << 20),
                    ("grpc.max_send_message_length", 64 << 20)]


class Client:
    """Channels to featured and rankd, created on first use.

    token: the daemons' admin token, sent as "authorization: Bearer <token>"
    metadata on every call (the admin methods, PutItems, AddInteractions and
    Train among them, need it when the daemon was started with one; the
    others ignore it). tls_ca: a PEM file of roots to verify a TLS daemon
    with; None means plain text (loopback, or a mesh that encrypts)."""

    def __init__(self, featured=None, rankd=None, token=None, tls_ca=None, timeout=30.0):
        self.featured_addr, self.rankd_addr = featured, rankd
        self.timeout = timeout
        self._metadata = (("authorization", "Bearer " + token),) if token else ()
        self._creds = None
        if tls_ca:
            with open(tls_ca, "rb") as f:
                self._creds = grpc.ssl_channel_credentials(root_certificates=f.read())
        self._featured = self._rankd = None

    def _channel(self, addr, what):
        if not addr:
            raise ValueError("no address for %s: pass --%s or set VISREC_%s" % (what, what, what.upper()))
        if self._creds:
            return grpc.secure_channel(addr, self._creds, options=_CHANNEL_OPTIONS)
        return grpc.insecure_channel(addr, options=_CHANNEL_OPTIONS)

    @property
    def featured(self):
        if self._featured is None:
            self._featured = featured_pb2_grpc.FeaturedStub(self._channel(self.featured_addr, "featured"))
        return self._featured

    @property
    def rankd(self):
        if self._rankd is None:
            self._rankd = rankd_pb2_grpc.RankStub(self._channel(self.rankd_addr, "rankd"))
        return self._rankd

    def _kw(self, timeout=None):
        return {"metadata": self._metadata, "timeout": timeout or self.timeout}

    # ---- rankd -------------------------------------------------------------

    def recommend(self, user, k=10, include_seen=False, candidates=(), context_items=()):
        """The top-k items of one user: a RecommendResponse."""
        req = rankd_pb2.RecommendRequest(user_id=user, k=k, include_seen=include_seen,
                                         candidates=list(candidates), context_items=list(context_items))
        return self.rankd.Recommend(req, **self._kw())

    def recommend_batch(self, users, k=10, include_seen=False, candidates=(), context_items=()):
        """The top-k items of several users in one call: a RecommendBatchResponse
        whose responses are in the order of users."""
        reqs = [rankd_pb2.RecommendRequest(user_id=u, k=k, include_seen=include_seen,
                                           candidates=list(candidates), context_items=list(context_items))
                for u in users]
        return self.rankd.RecommendBatch(rankd_pb2.RecommendBatchRequest(requests=reqs), **self._kw())

    def score(self, user, items):
        """The served model's score of each item for user, in order: a ScoreResponse."""
        return self.rankd.Score(rankd_pb2.ScoreRequest(user_id=user, item_ids=list(items)), **self._kw())

    # ---- featured ----------------------------------------------------------

    def featured_info(self):
        return self.featured.Info(featured_pb2.FeaturedInfoRequest(), **self._kw())

    def ingest(self, folder, batch=64, timeout=600.0):
        """Sends every FOLDER/images/*.jpg (or FOLDER/*.jpg) to featured, the
        file name without .jpg as the item id, batch images per PutItems
        stream (featured answers each stream with one status per item; a
        smaller batch keeps that reply and the images in flight small).

        Images over featured's limit (Info.max_image_bytes) are not sent:
        featured would refuse them. Returns a dict: accepted, rejected and
        errors, a list of (item_id, status name, message)."""
        d = os.path.join(folder, "images")
        if not os.path.isdir(d):
            d = folder
        names = sorted(n for n in os.listdir(d)
                       if not n.startswith(".") and os.path.splitext(n)[1].lower() in (".jpg", ".jpeg"))
        if not names:
            raise ValueError("no .jpg files in %s" % d)
        limit = self.featured_info().max_image_bytes
        out = {"accepted": 0, "rejected": 0, "errors": []}

        def requests(chunk):
            for name in chunk:
                path = os.path.join(d, name)
                item = os.path.splitext(name)[0]
                size = os.path.getsize(path)
                if limit and size > limit:
                    out["rejected"] += 1
                    out["errors"].append((item, "LOCAL", "image of %d bytes is over featured's limit of %d "
                                          "bytes" % (size, limit)))
                    continue
                with open(path, "rb") as f:
                    yield featured_pb2.PutItemsRequest(item_id=item, image=f.read())

        for i in range(0, len(names), batch):
            reply = self.featured.PutItems(requests(names[i:i + batch]), **self._kw(timeout))
            out["accepted"] += reply.accepted
            out["rejected"] += reply.rejected
            for st in reply.items:
                if st.code:
                    out["errors"].append((st.item_id, _status_name(st.code), st.message))
        return out

    def get_vectors(self, ids=None, model_version=0):
        """Yields (item_id, list of floats, model_version) of the listed ids,
        or of every item when ids is None, from the GetVectors stream."""
        req = featured_pb2.GetVectorsRequest(item_ids=list(ids or ()), all=ids is None,
                                             model_version=model_version)
        for chunk in self.featured.GetVectors(req, metadata=self._metadata, timeout=600.0):
            for v in chunk.vectors:
                yield v.item_id, list(v.values), chunk.model_version


def _status_name(code):
    """The name of an integer gRPC status code ("INVALID_ARGUMENT")."""
    for s in grpc.StatusCode:
        if s.value[0] == code:
            return s.name
    return str(code)


# ---- the command line ------------------------------------------------------

def _json(msg):
    """A message as JSON the way `visrec --json` writes it: proto field
    names, enums by name, defaults included, 64-bit integers as numbers."""
    from google.protobuf import json_format
    d = json_format.MessageToDict(msg, preserving_proto_field_name=True,
                                  including_default_value_fields=True)

    def fix(o, m):
        # MessageToDict writes (u)int64 as strings (JSON numbers lose
        # precision past 2^53); our ids of versions and counts stay far below.
        for f in m.DESCRIPTOR.fields:
            if f.name not in o:
                continue
            if f.type in (f.TYPE_INT64, f.TYPE_UINT64, f.TYPE_SINT64, f.TYPE_FIXED64, f.TYPE_SFIXED64):
                o[f.name] = [int(x) for x in o[f.name]] if f.label == f.LABEL_REPEATED else int(o[f.name])
            elif f.type == f.TYPE_MESSAGE:
                sub = getattr(m, f.name)
                if f.label == f.LABEL_REPEATED:
                    for oo, mm in zip(o[f.name], sub):
                        fix(oo, mm)
                else:
                    fix(o[f.name], sub)
        return o

    return fix(d, msg)


def _print_items(items, ranked):
    for i, it in enumerate(items):
        print("%s%-24s %10.5f%s" % ("%4d  " % (i + 1) if ranked else "", it.item_id, it.score,
                                    "  cold" if it.cold else ""))


def _fail(args, what, e):
    name = e.code().name if e.code() else "UNKNOWN"
    print("visrec_client: %s failed: %s: %s" % (what, name, e.details()), file=sys.stderr)
    if args.json:
        print(json.dumps({"error": {"status": name, "code": e.code().value[0] if e.code() else 2,
                                    "message": e.details()}}))
    return 1


def main(argv=None):
    env = os.environ.get
    p = argparse.ArgumentParser(description="An example Python client of visrec's featured and rankd.")
    p.add_argument("--featured", default=env("VISREC_FEATURED", "127.0.0.1:7000"), help="featured's address")
    p.add_argument("--rankd", default=env("VISREC_RANKD", "127.0.0.1:7001"), help="rankd's address")
    p.add_argument("--token-file", default=env("VISREC_TOKEN_FILE"),
                   help="file holding the admin token (sent as authorization: Bearer)")
    p.add_argument("--tls-ca", default=env("VISREC_TLS_CA"), help="PEM roots to verify TLS daemons")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per call")
    p.add_argument("--json", action="store_true", help="print replies as JSON (as visrec --json does)")
    p.add_argument("--gen", help="folder of the generated stubs (gen.sh); or VISREC_PY_GEN")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("recommend", help="top-k items for one or more users (several: RecommendBatch)")
    r.add_argument("--user", required=True, help="user id; several, comma-separated, in one RecommendBatch")
    r.add_argument("-k", "--k", type=int, default=10)
    r.add_argument("--include-seen", action="store_true")
    r.add_argument("--candidates", default="", help="rank only these items (comma-separated)")
    r.add_argument("--context", default="", help="for an unknown user: items that profile them")
    s = sub.add_parser("score", help="scores of given items for a user")
    s.add_argument("--user", required=True)
    s.add_argument("items", nargs="+")
    i = sub.add_parser("ingest", help="send a folder of JPEGs to featured (PutItems)")
    i.add_argument("folder")
    i.add_argument("--batch", type=int, default=64, help="images per PutItems call")
    args = p.parse_args(argv)

    token = None
    if args.token_file:
        with open(args.token_file) as f:
            token = f.readline().rstrip("\r\n")
    c = Client(featured=args.featured, rankd=args.rankd, token=token, tls_ca=args.tls_ca,
               timeout=args.timeout)
    split = lambda s: [x for x in s.split(",") if x]
    try:
        if args.cmd == "recommend":
            users = split(args.user)
            if len(users) == 1:
                rs = [c.recommend(users[0], args.k, args.include_seen, split(args.candidates),
                                  split(args.context))]
            else:
                rs = list(c.recommend_batch(users, args.k, args.include_seen, split(args.candidates),
                                            split(args.context)).responses)
            if args.json:
                out = [dict(_json(x), user_id=u) for u, x in zip(users, rs)]
                print(json.dumps(out[0] if len(users) == 1 else out))
                return 0
            for n, (u, x) in enumerate(zip(users, rs)):
                print("%suser %s: %s, model version %d%s" % (
                    "\n" if n else "", u, rankd_pb2.ModelKind.Name(x.model), x.model_version,
                    " (fallback: %s)" % x.fallback if x.fallback else ""))
                _print_items(x.items, True)
        elif args.cmd == "score":
            x = c.score(args.user, args.items)
            if args.json:
                print(json.dumps(dict(_json(x), user_id=args.user)))
                return 0
            print("user %s: %s, model version %d" % (args.user, rankd_pb2.ModelKind.Name(x.model),
                                                    x.model_version))
            _print_items(x.items, False)
        elif args.cmd == "ingest":
            out = c.ingest(args.folder, args.batch)
            if args.json:
                print(json.dumps({"accepted": out["accepted"], "rejected": out["rejected"],
                                  "errors": [{"item_id": a, "status": b, "message": m}
                                             for a, b, m in out["errors"]]}))
            else:
                print("%d images stored, %d rejected" % (out["accepted"], out["rejected"]))
                for a, b, m in out["errors"][:20]:
                    print("  %s: %s: %s" % (a, b, m))
            return 3 if out["rejected"] else 0
    except grpc.RpcError as e:
        return _fail(args, {"recommend": "Recommend", "score": "Score", "ingest": "PutItems"}[args.cmd], e)
    except (OSError, ValueError) as e:
        print("visrec_client: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
