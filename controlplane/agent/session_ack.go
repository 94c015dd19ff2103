package agent

import clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"

// HelloAck returns the HelloAck of the container's live Session, nil
// when there is none. Exec reads it for the agent's user, the image
// WORKDIR and the capabilities of that clawkerd.
func (d *Dialer) HelloAck(containerID string) *clawkerdv1.HelloAck {
	d.mu.Lock()
	defer d.mu.Unlock()
	if e, ok := d.dialing[containerID]; ok && e.sess != nil {
		return e.sess.ack
	}
	return nil
}
