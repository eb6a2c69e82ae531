"""Which shard owns an item, as common/shardmap.h defines it, for the
shard tests to check the daemons against an independent computation.

As a program: python3 shardmap.py NAME... reads item ids (whitespace
separated) on stdin and prints "ID OWNER" per id."""
import sys


def _fnv(h, data):
    for x in data:
        h = ((h ^ x) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def _mix(z):
    z ^= z >> 30
    z = (z * 0xbf58476d1ce4e5b9) & 0xFFFFFFFFFFFFFFFF
    z ^= z >> 27
    z = (z * 0x94d049bb133111eb) & 0xFFFFFFFFFFFFFFFF
    return z ^ (z >> 31)


def owner(names, item_id):
    """The shard of names owning item_id: the highest hash, the smaller
    name on a tie."""
    def weight(n):
        h = _mix(_fnv(_fnv(0xcbf29ce484222325, n.encode()), b"\0" + item_id.encode()))
        return (h, [-ord(c) for c in n])
    return max(sorted(names), key=weight)


if __name__ == "__main__":
    for i in sys.stdin.read().split():
        print(i, owner(sys.argv[1:], i))
