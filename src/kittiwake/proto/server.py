"""SERVER-SIDE CONNECTION — API CONTRACT (implementation in progress).

    conn = ServerConnection(ProtoConfig(...), tls=False)
    out = conn.greeting()            # b"220 host ESMTP Kittiwake\r\n"
    conn.receive_data(chunk)         # b"" means EOF
    while (ev := conn.next_event()) not in (NEED_DATA, PAUSED) ...:
        decision events → exactly one answer method below
    sock.write(conn.data_to_send())  # flush when next_event() returns NEED_DATA

Answer methods (valid only while a decision is pending, else LocalProtocolError):
    accept_helo()                          Helo → 250 (EHLO: extension list)
    accept(reply: Reply | None = None)     MailFrom/RcptTo → 250 2.1.0 / 2.1.5 default;
                                           DataStart → 354 (DATA) or chunk flows (BDAT);
                                           BodyEnd → reply required (250 with queue id)
    accept_lmtp(replies: Sequence[Reply])  BodyEnd in LMTP mode: one per accepted RCPT
    reject(reply: Reply)                   any decision
    auth_challenge(data: bytes)            AuthStart/AuthResponse → 334 base64(data)
    auth_success(identity: str)            → 235 2.7.0, marks the session authenticated
Other methods:
    tls_established()                      after StartTLS: fresh state, tls=True
    close_with(reply)                      driver-initiated close (timeouts, shutdown: 421)
Properties: tls, authenticated (identity | None), helo_domain, esmtp, in_transaction.
"""
