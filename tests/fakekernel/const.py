"""Numeric constants of the tcp_estats ABI (web10g-abi.md §2, §3) and of netlink itself.

Module numbering throughout (never the divergent libestats numbering of §3.2).
"""
from __future__ import annotations

# --- netlink framing (linux/netlink.h) ---------------------------------------------------
NLMSG_HDRLEN = 16
GENL_HDRLEN = 4
NLA_HDRLEN = 4

NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE, NLMSG_OVERRUN = 1, 2, 3, 4
NLMSG_MIN_TYPE = 0x10          # types below are control messages: merely ACKed

NLM_F_REQUEST = 0x001
NLM_F_MULTI = 0x002
NLM_F_ACK = 0x004
NLM_F_ECHO = 0x008
NLM_F_ROOT = 0x100
NLM_F_MATCH = 0x200
NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH      # both bits: a dump (genl checks == DUMP)
NLM_F_CAPPED = 0x100           # on an NLMSG_ERROR: payload holds only the request header

NLA_F_NESTED = 0x8000
NLA_F_NET_BYTEORDER = 0x4000
NLA_TYPE_MASK = 0x3FFF

# --- generic netlink controller (linux/genetlink.h), §2.1 --------------------------------
GENL_ID_CTRL = 0x10
CTRL_VERSION = 2               # the controller family's own version (kernel: 0x2)
CTRL_CMD_NEWFAMILY = 1
CTRL_CMD_GETFAMILY = 3
CTRL_ATTR_FAMILY_ID = 1
CTRL_ATTR_FAMILY_NAME = 2
CTRL_ATTR_VERSION = 3
CTRL_ATTR_HDRSIZE = 4
CTRL_ATTR_MAXATTR = 5
CTRL_ATTR_OPS = 6
CTRL_ATTR_MCAST_GROUPS = 7
CTRL_ATTR_MAX = 10             # controller parses attributes up to here; others ignored
CTRL_ATTR_OP_ID = 1
CTRL_ATTR_OP_FLAGS = 2
CTRL_ATTR_MCAST_GRP_NAME = 1
CTRL_ATTR_MCAST_GRP_ID = 2
GENL_NAMSIZ = 16
GENL_CMD_CAP_DO = 0x02         # op flags: do handler only, no dump, no policy, no admin

# --- tcp_estats family, §2 -----------------------------------------------------------------
FAMILY_NAME = "tcp_estats"
FAMILY_VERSION = 1
MCAST_GROUP_NAME = "tcp_estats_mc"

# §3.1 commands
TCPE_CMD_LIST_CONNS = 0
TCPE_CMD_READ_ALL = 1
TCPE_CMD_READ_VARS = 2
TCPE_CMD_WRITE_VAR = 3
TCPE_CMD_INIT = 4
TCPE_CMD_TIMESTAMP = 5
NUM_COMMANDS = 6
COMMAND_NAMES = {
    0: "LIST_CONNS", 1: "READ_ALL", 2: "READ_VARS", 3: "WRITE_VAR", 4: "INIT", 5: "TIMESTAMP",
}

# §3.2 top-level attributes
NLE_ATTR_PERF_VALS = 1          # .. NLE_ATTR_EXTRAS_VALS = 6 (table + 1)
NLE_ATTR_MASK = 13
NLE_ATTR_4TUPLE = 14
NLE_ATTR_WRITE = 15
NLE_ATTR_TIME = 16
NLE_ATTR_NUM_TABLES = 17
NLE_ATTR_NUM_VARS = 18
NLE_ATTR_PERF_VARS = 19         # .. NLE_ATTR_EXTRAS_VARS = 24 (table + 19)
NLE_ATTR_VAR = 25
NLE_ATTR_TIMESTAMP_DELTA = 26
NLE_ATTR_TIMESTAMP = 27
NLE_ATTR_PAD = 28

# §3.3 nested enums
NEA_VAR_NAME, NEA_VAR_TYPE = 1, 2
NEA_REM_ADDR, NEA_REM_PORT, NEA_LOCAL_ADDR, NEA_LOCAL_PORT, NEA_ADDR_TYPE, NEA_CID = range(1, 7)
NEA_WRITE_VAR, NEA_WRITE_VAL = 1, 2
NEA_TIME_SEC, NEA_TIME_USEC = 1, 2
# mask members: NEA_PERF_MASK (1) .. NEA_EXTRAS_MASK (6) = table + 1

TABLES = ("perf", "path", "stack", "app", "tune", "extras")
NUM_TABLES = 6

ADDR_TYPE_IPV4 = 1
ADDR_TYPE_IPV6 = 2

# The DLKM's CID allocator wraps modulo this (§8).
CID_WRAP = 5_000_000
