// Command gopeer is the Go side of the tunnel interoperability test: hashicorp/yamux over a
// gorilla WebSocket, speaking kubeprober's OPEN header inside each stream. It serves the
// target "echo", refuses every other target, and (once the session is up) opens "echo" and
// "nope" on the Python side. It prints one "GO <check> ..." line per passed check (the refusal's
// code and text as read) and exits 0 when the Python side closes the session, or 1 on the first
// failed check.
package main

import (
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/hashicorp/yamux"
)

const subprotocol = "kubeprober.v1"

// wsConn turns a WebSocket into a byte stream: Write sends one binary message per call (so
// yamux's header and body travel as separate messages) and Read ignores message boundaries.
type wsConn struct {
	ws     *websocket.Conn
	reader io.Reader
	wmu    sync.Mutex
}

func (c *wsConn) Read(p []byte) (int, error) {
	for {
		if c.reader == nil {
			kind, r, err := c.ws.NextReader()
			if err != nil {
				return 0, err
			}
			if kind != websocket.BinaryMessage {
				return 0, fmt.Errorf("unexpected message type %d", kind)
			}
			c.reader = r
		}
		n, err := c.reader.Read(p)
		if err == io.EOF {
			c.reader = nil
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

func (c *wsConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *wsConn) Close() error { return c.ws.Close() }

func fail(format string, args ...interface{}) {
	fmt.Printf("GO FAIL "+format+"\n", args...)
	os.Exit(1)
}

func readOpen(s net.Conn) (string, error) {
	prefix := make([]byte, 2)
	if _, err := io.ReadFull(s, prefix); err != nil {
		return "", err
	}
	if prefix[0] != 1 || prefix[1] == 0 || prefix[1] > 64 {
		return "", fmt.Errorf("bad OPEN prefix %v", prefix)
	}
	name := make([]byte, prefix[1])
	if _, err := io.ReadFull(s, name); err != nil {
		return "", err
	}
	return string(name), nil
}

func answer(code byte, text string) []byte {
	out := []byte{code, 0, 0}
	binary.BigEndian.PutUint16(out[1:], uint16(len(text)))
	return append(out, text...)
}

// serve answers one incoming stream: echo for "echo", an error answer for anything else.
func serve(s net.Conn) {
	defer s.Close()
	target, err := readOpen(s)
	if err != nil {
		fmt.Printf("GO bad open: %v\n", err)
		return
	}
	if target != "echo" {
		// A refusal is the answer and FIN (the deferred Close); yamux has no way to send RST.
		s.Write(answer(1, "go peer has no target "+target))
		return
	}
	s.Write(answer(0, ""))
	io.Copy(s, s)
}

// open opens a stream to target on the Python side and returns its answer's code and text.
// A refusal must be readable: the answer, then FIN (EOF here), never a reset before we close.
func open(sess *yamux.Session, target string) (net.Conn, byte, string) {
	s, err := sess.Open()
	if err != nil {
		fail("open %s: %v", target, err)
	}
	req := append([]byte{1, byte(len(target))}, target...)
	if _, err := s.Write(req); err != nil {
		fail("write OPEN %s: %v", target, err)
	}
	head := make([]byte, 3)
	if _, err := io.ReadFull(s, head); err != nil {
		fail("read answer to OPEN %s: %v", target, err)
	}
	text := make([]byte, binary.BigEndian.Uint16(head[1:]))
	if _, err := io.ReadFull(s, text); err != nil {
		fail("read answer text to OPEN %s: %v", target, err)
	}
	if head[0] != 0 {
		if rest, err := io.ReadAll(s); err != nil || len(rest) > 0 {
			fail("after refusal of %s: %d more bytes, err %v (want FIN)", target, len(rest), err)
		}
	}
	return s, head[0], string(text)
}

func check(sess *yamux.Session, size int) {
	s, code, text := open(sess, "echo")
	if code != 0 {
		fail("echo refused with code %d: %s", code, text)
	}
	payload := make([]byte, size)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	go func() {
		if _, err := s.Write(payload); err != nil {
			fail("write echo payload: %v", err)
		}
	}()
	// Read exactly what was sent before closing: this yamux version's Read returns EOF in the
	// local-close state whenever its buffer is momentarily empty, so half-closing first races.
	got := make([]byte, size)
	if _, err := io.ReadFull(s, got); err != nil || !bytes.Equal(got, payload) {
		fail("echo of %d bytes: err %v", size, err)
	}
	s.Close()
	fmt.Printf("GO echo-%d ok\n", size)

	n, code, text := open(sess, "nope")
	if code == 0 {
		fail("target nope was accepted")
	}
	n.Close()
	fmt.Printf("GO refused code=%d text=%q\n", code, text)
	// The session must survive the refusal.
	if _, err := sess.Ping(); err != nil {
		fail("ping after refusal: %v", err)
	}
	fmt.Println("GO ping ok")
}

func run(ws *websocket.Conn, server bool) {
	cfg := yamux.DefaultConfig()
	cfg.LogOutput = os.Stderr
	cfg.KeepAliveInterval = 500 * time.Millisecond
	conn := &wsConn{ws: ws}
	var sess *yamux.Session
	var err error
	if server {
		sess, err = yamux.Server(conn, cfg)
	} else {
		sess, err = yamux.Client(conn, cfg)
	}
	if err != nil {
		fail("session: %v", err)
	}
	go func() {
		for {
			s, err := sess.Accept()
			if err != nil {
				return
			}
			go serve(s)
		}
	}()
	check(sess, 1<<20+3)
	fmt.Println("GO done")
	<-sess.CloseChan()
	os.Exit(0)
}

func main() {
	dial := flag.String("dial", "", "ws:// URL to dial (yamux client); empty = listen (yamux server)")
	flag.Parse()
	if *dial != "" {
		d := websocket.Dialer{Subprotocols: []string{subprotocol}, HandshakeTimeout: 5 * time.Second}
		ws, resp, err := d.Dial(*dial, nil)
		if err != nil {
			fail("dial: %v", err)
		}
		if resp.Header.Get("Sec-WebSocket-Protocol") != subprotocol {
			fail("subprotocol %q", resp.Header.Get("Sec-WebSocket-Protocol"))
		}
		run(ws, false)
		return
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail("listen: %v", err)
	}
	fmt.Printf("LISTEN %d\n", ln.Addr().(*net.TCPAddr).Port)
	up := websocket.Upgrader{Subprotocols: []string{subprotocol}}
	http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			fail("upgrade: %v", err)
		}
		run(ws, true)
	}))
}
