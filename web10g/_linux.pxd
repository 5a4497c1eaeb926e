# cython: language_level=3
"""Kernel structures and constants (netlink, generic netlink, sock_diag/inet_diag).

Taken from the system's uapi headers so sizes and offsets are the kernel's own; libmnl's
API is in ``_mnl.pxd``.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t


cdef extern from "<sys/socket.h>" nogil:
    int AF_NETLINK
    int AF_INET
    int AF_INET6
    int SOCK_RAW
    int SOCK_CLOEXEC
    int SOL_SOCKET
    int SO_RCVTIMEO
    int SO_RCVBUF
    int MSG_DONTWAIT


cdef extern from "<linux/netlink.h>" nogil:
    int NETLINK_ROUTE
    int NETLINK_USERSOCK
    int NETLINK_SOCK_DIAG
    int NETLINK_GENERIC
    int NETLINK_ADD_MEMBERSHIP
    int NETLINK_DROP_MEMBERSHIP
    int NETLINK_CAP_ACK
    int NETLINK_EXT_ACK

    int NLM_F_REQUEST
    int NLM_F_MULTI
    int NLM_F_ACK
    int NLM_F_DUMP
    int NLM_F_DUMP_INTR
    int NLM_F_ACK_TLVS
    int NLM_F_CAPPED

    int NLMSG_NOOP
    int NLMSG_ERROR
    int NLMSG_DONE
    int NLMSG_OVERRUN
    int NLMSG_MIN_TYPE
    int NLMSG_HDRLEN

    int NLA_F_NESTED
    int NLA_F_NET_BYTEORDER
    int NLA_TYPE_MASK

    int NLMSGERR_ATTR_MSG
    int NLMSGERR_ATTR_OFFS

    ctypedef unsigned short __kernel_sa_family_t

    struct sockaddr_nl:
        __kernel_sa_family_t nl_family
        unsigned short nl_pad
        uint32_t nl_pid
        uint32_t nl_groups

    struct nlmsghdr:
        uint32_t nlmsg_len
        uint16_t nlmsg_type
        uint16_t nlmsg_flags
        uint32_t nlmsg_seq
        uint32_t nlmsg_pid

    struct nlmsgerr:
        int error
        nlmsghdr msg

    struct nlattr:
        uint16_t nla_len
        uint16_t nla_type


cdef extern from "<linux/genetlink.h>" nogil:
    int GENL_ID_CTRL
    int GENL_HDRLEN
    struct genlmsghdr:
        uint8_t cmd
        uint8_t version
        uint16_t reserved

    int CTRL_CMD_NEWFAMILY
    int CTRL_CMD_GETFAMILY
    int CTRL_ATTR_FAMILY_ID
    int CTRL_ATTR_FAMILY_NAME
    int CTRL_ATTR_VERSION
    int CTRL_ATTR_HDRSIZE
    int CTRL_ATTR_MAXATTR
    int CTRL_ATTR_OPS
    int CTRL_ATTR_MCAST_GROUPS
    int CTRL_ATTR_OP_ID
    int CTRL_ATTR_OP_FLAGS
    int CTRL_ATTR_MCAST_GRP_NAME
    int CTRL_ATTR_MCAST_GRP_ID


cdef extern from "<linux/sock_diag.h>" nogil:
    int SOCK_DIAG_BY_FAMILY
    int SOCK_DESTROY


cdef extern from "<linux/inet_diag.h>" nogil:
    struct inet_diag_sockid:
        uint16_t idiag_sport
        uint16_t idiag_dport
        uint32_t idiag_src[4]
        uint32_t idiag_dst[4]
        uint32_t idiag_if
        uint32_t idiag_cookie[2]

    struct inet_diag_req_v2:
        uint8_t sdiag_family
        uint8_t sdiag_protocol
        uint8_t idiag_ext
        uint8_t pad
        uint32_t idiag_states
        inet_diag_sockid id

    struct inet_diag_msg:
        uint8_t idiag_family
        uint8_t idiag_state
        uint8_t idiag_timer
        uint8_t idiag_retrans
        inet_diag_sockid id
        uint32_t idiag_expires
        uint32_t idiag_rqueue
        uint32_t idiag_wqueue
        uint32_t idiag_uid
        uint32_t idiag_inode
