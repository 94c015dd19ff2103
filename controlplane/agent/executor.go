package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/logger"
)

// detailOutputMax bounds the output tail carried in InitStepFailed.Detail:
// enough for the last error lines of a hook, small enough for an event.
const detailOutputMax = 1024

// stepGrace is how long past a command's own timeout the Executor still
// waits for its reply: clawkerd's TIMEOUT comes after the kill, the reaps
// and the output drain. Past it the peer is not answering.
const stepGrace = 15 * time.Second

// stepWaitBound is the Executor's wait for one command's reply.
func stepWaitBound(timeout time.Duration) time.Duration { return timeout + stepGrace }

// InitTarget identifies the agent the Executor is initializing, plus the
// HelloAck flags that select the plan.
type InitTarget struct {
	ContainerID string
	AgentName   string
	Project     string
	// Initialized is HelloAck.initialized: the one-time steps already ran.
	Initialized bool
	// CmdRunning is HelloAck.cmd_running: the user CMD is already up.
	CmdRunning bool
	// User is HelloAck.user: CLAWKER_USER as clawkerd resolved it for the
	// user CMD. nil (an older clawkerd) makes the Executor probe for it
	// with a shell command first.
	User *clawkerdv1.ResolvedUser
	// NoShell is HelloAck.no_shell, meaningful only with User: the image
	// has no /bin/sh.
	NoShell bool
	// Staged is HelloAck.staged: the staged init inputs. nil (older
	// clawkerd) means every step runs.
	Staged *clawkerdv1.StagedInputs
	// InitOnce: the peer announced init-once/v1, so one-time steps carry a
	// once_key and CompletedOnce (HelloAck.completed_once) lists the ones
	// that already succeeded: a CP that died mid-plan resumes it.
	InitOnce      bool
	CompletedOnce []string
}

// TargetFromHelloAck fills the HelloAck-derived fields of an InitTarget.
func TargetFromHelloAck(t InitTarget, ack *clawkerdv1.HelloAck) InitTarget {
	t.Initialized, t.CmdRunning = ack.GetInitialized(), ack.GetCmdRunning()
	t.User, t.NoShell, t.Staged = ack.GetUser(), ack.GetNoShell(), ack.GetStaged()
	t.InitOnce = clawkerdv1.HasCapability(ack, clawkerdv1.CapInitOnce)
	if t.InitOnce {
		t.CompletedOnce = ack.GetCompletedOnce()
	}
	return t
}

// ExecutorOption configures an Executor.
type ExecutorOption func(*Executor)

// WithDefaultCmd sets AgentReady.default_cmd, used by clawkerd only when
// the container has no CMD of its own.
func WithDefaultCmd(cmd string) ExecutorOption { return func(e *Executor) { e.defaultCmd = cmd } }

// Executor dispatches the init plan over an open Session stream. It holds
// no per-run mutable state, so one Executor serves every container and
// Runs on different streams proceed in parallel.
type Executor struct {
	log        *logger.Logger
	bus        *overseer.Overseer
	defaultCmd string
	seq        atomic.Uint64
	now        func() time.Time
	// stepWait bounds the wait for one command's Done or Error from its
	// timeout (stepWaitBound; tests shorten it).
	stepWait func(timeout time.Duration) time.Duration
	// plan builds a Run's steps (buildPlan; tests substitute their own).
	plan func(InitTarget) []step
}

// NewExecutor constructs an Executor. bus is required; a nil log is Nop.
func NewExecutor(log *logger.Logger, bus *overseer.Overseer, opts ...ExecutorOption) (*Executor, error) {
	if bus == nil {
		return nil, errors.New("agent: NewExecutor: nil bus")
	}
	e := &Executor{log: logger.OrNop(log), bus: bus, now: time.Now, stepWait: stepWaitBound, plan: buildPlan}
	for _, o := range opts {
		o(e)
	}
	return e, nil
}

// stepResult is one step's outcome.
type stepResult struct {
	exit   int32
	reason overseer.InitFailureReason // empty on success
	detail string
	// noShell: the image has no /bin/sh (SPAWN_FAILED on the probe).
	noShell bool
}

func (r stepResult) ok() bool { return r.reason == "" }

// Run dispatches the plan one step at a time, awaiting Done or Error per
// command before sending the next, publishing Init* events throughout. It
// returns nil on full success, or the error that halted the plan.
//
// Caller invariants: Hello/HelloAck and any Register handshake are done;
// Run owns stream.Recv for its duration; stream's context must end when
// ctx does (the dialer derives both from one per-dial context), since a
// blocked Recv can only be released by the stream's own context.
//
// The user the steps run as comes from HelloAck (target.User), the same
// resolution clawkerd applies to the user CMD; only an older clawkerd
// that does not report it costs a probe shell command.
//
// A step whose staged input HelloAck.staged shows absent is completed
// without running: its script would exit 0 having done nothing.
//
// Images without /bin/sh (HelloAck.no_shell, or SPAWN_FAILED on the
// probe): every shell step is reported completed without running (there
// is nothing a shell step could do in such an image); agent-ready still
// runs.
func (e *Executor) Run(ctx context.Context, stream clawkerdv1.ClawkerdService_SessionClient, target InitTarget) (runErr error) {
	if stream == nil {
		return errors.New("agent: Executor.Run: nil stream")
	}
	log := e.log.With("container_id", target.ContainerID)
	defer func() {
		if r := recover(); r != nil {
			log.Error().Str("event", "agent_init_panic").Str("panic", fmt.Sprint(r)).Msg("recovered")
			runErr = fmt.Errorf("init executor panic: %v", r)
		}
	}()
	plan := e.plan(target)
	start := e.now()
	e.bus.Publish(InitStarted{Subject: overseer.Subject{ContainerID: target.ContainerID, AgentName: target.AgentName,
		Project: target.Project}, StepCount: len(plan), At: start})

	r := &planRun{e: e, ctx: ctx, stream: asTimedReceiver(stream), target: target, log: log}
	staged := stagedSet(target.Staged)
	user, probe := r.resolveUser()
	if !probe.ok() && !probe.noShell {
		// A transport failure here is fatal to the whole plan; anything
		// else falls back to root like the spec's default user.
		// So is a probe that got no answer at all: every step would wait
		// out its own bound on the same peer.
		if probe.reason == overseer.InitReasonTransport || probe.reason == overseer.InitReasonCancelled ||
			probe.reason == overseer.InitReasonTimeout {
			return e.fail(target, "probe-user", probe, start)
		}
		log.Warn().Str("event", "agent_init_user_probe_failed").Str("detail", probe.detail).
			Msg("could not resolve CLAWKER_USER; using root")
	}

	for i, st := range plan {
		idx := i + 1 // 1-based: "step i of N"
		stepStart := e.now()
		e.bus.Publish(InitStepStarted{Subject: overseer.Subject{ContainerID: target.ContainerID, AgentName: target.AgentName,
			Project: target.Project}, StepName: st.name, StepIndex: idx, StepCount: len(plan), At: stepStart})
		var res stepResult
		switch {
		case st.kind == kindAgentReady:
			res = r.command(&clawkerdv1.Command{Payload: &clawkerdv1.Command_AgentReady{
				AgentReady: &clawkerdv1.AgentReady{DefaultCmd: e.defaultCmd}}}, "agent-ready")
		case st.once && target.InitOnce && slices.Contains(target.CompletedOnce, st.name):
			// clawkerd recorded it: a CP died after it ran but before the
			// plan finished. It would answer Done(0) anyway; skip the trip.
			log.Info().Str("event", "agent_init_step_already_done").Str("step", st.name).
				Msg("one-time step recorded by clawkerd; not run again")
		case probe.noShell:
			log.Info().Str("event", "agent_init_step_skipped_no_shell").Str("step", st.name).
				Msg("image has no /bin/sh; shell step skipped")
		case st.inputAbsent(staged):
			// The script would find nothing staged and exit 0: same
			// outcome, minus a round trip and a fork.
			log.Debug().Str("event", "agent_init_step_no_input").Str("step", st.name).
				Msg("nothing staged for the step; completed without running")
		default:
			res = r.shell(st, user)
		}
		if res.ok() && st.markInitialized && !probe.noShell {
			res = r.command(&clawkerdv1.Command{Payload: &clawkerdv1.Command_AgentInitialized{
				AgentInitialized: &clawkerdv1.AgentInitialized{}}}, "agent-initialized")
		}
		dur := e.now().Sub(stepStart)
		if !res.ok() {
			e.bus.Publish(InitStepFailed{Subject: overseer.Subject{ContainerID: target.ContainerID, AgentName: target.AgentName,
				Project: target.Project}, StepName: st.name, StepIndex: idx, Duration: dur,
				ExitCode: res.exit, Reason: res.reason, Detail: res.detail, At: e.now()})
			return e.fail(target, st.name, res, start)
		}
		e.bus.Publish(InitStepCompleted{Subject: overseer.Subject{ContainerID: target.ContainerID, AgentName: target.AgentName,
			Project: target.Project}, StepName: st.name, StepIndex: idx, Duration: dur,
			ExitCode: res.exit, At: e.now()})
	}
	e.bus.Publish(InitCompleted{Subject: overseer.Subject{ContainerID: target.ContainerID, AgentName: target.AgentName,
		Project: target.Project}, Duration: e.now().Sub(start), At: e.now()})
	return nil
}

func (e *Executor) fail(t InitTarget, name string, res stepResult, start time.Time) error {
	e.bus.Publish(InitFailed{Subject: overseer.Subject{ContainerID: t.ContainerID, AgentName: t.AgentName, Project: t.Project},
		FailedStep: name, Reason: res.reason, Detail: res.detail, ExitCode: res.exit,
		Duration: e.now().Sub(start), At: e.now()})
	e.log.Warn().Str("event", "agent_init_failed").Str("container_id", t.ContainerID).
		Str("step", name).Str("reason", string(res.reason)).Int32("exit_code", res.exit).
		Str("detail", res.detail).Msg("init plan halted")
	return fmt.Errorf("init step %s: %s: %s", name, res.reason, res.detail)
}

// planRun is the per-Run state: it lives on Run's stack, never shared.
type planRun struct {
	e      *Executor
	ctx    context.Context
	stream timedReceiver
	target InitTarget
	log    *logger.Logger
}

func (r *planRun) nextID(tag string) string {
	return fmt.Sprintf("init/%s/%d", tag, r.e.seq.Add(1))
}

// resolveUser takes CLAWKER_USER from HelloAck, or probes for it.
func (r *planRun) resolveUser() (userInfo, stepResult) {
	u := r.target.User
	if u == nil {
		return r.probe()
	}
	home := u.GetHome()
	if home == "" {
		home = "/"
	}
	return userInfo{uid: u.GetUid(), gid: u.GetGid(), home: home}, stepResult{noShell: r.target.NoShell}
}

// probe resolves CLAWKER_USER inside the container with a shell command.
func (r *planRun) probe() (userInfo, stepResult) {
	cmd := &clawkerdv1.ShellCommand{
		Stages:         []*clawkerdv1.PipeStage{{Argv: []string{"/bin/sh", "-c", probeScript}}},
		TimeoutSeconds: uint32(probeTimeout / time.Second),
	}
	res, out := r.await(&clawkerdv1.Command{Payload: &clawkerdv1.Command_Shell{Shell: cmd}}, "probe-user", probeTimeout)
	if !res.ok() {
		return rootUser, res
	}
	u, err := parseProbe(out)
	if err != nil {
		return rootUser, stepResult{reason: overseer.InitReasonRemoteError, detail: err.Error(), exit: -1}
	}
	return u, res
}

// stageFor is the one PipeStage a shell step sends: its script, and the
// user's identity for every asUser step.
func stageFor(st step, u userInfo) *clawkerdv1.PipeStage {
	stage := &clawkerdv1.PipeStage{Argv: []string{"/bin/sh", "-c", st.script(u)}, Cwd: "/"}
	if st.asUser {
		stage.Uid, stage.Gid = u.uid, u.gid
	}
	return stage
}

func (r *planRun) shell(st step, u userInfo) stepResult {
	stage := stageFor(st, u)
	cmd := &clawkerdv1.ShellCommand{
		Stages:         []*clawkerdv1.PipeStage{stage},
		TimeoutSeconds: uint32(st.timeout / time.Second),
		ExitOnNonZero:  st.exitOnNonZero,
	}
	if st.once && r.target.InitOnce {
		cmd.OnceKey = st.name
	}
	res, _ := r.await(&clawkerdv1.Command{Payload: &clawkerdv1.Command_Shell{Shell: cmd}}, st.name, st.timeout)
	if res.noShell {
		// The probe succeeded, so a SPAWN_FAILED here is a real failure.
		res.noShell = false
		res.reason = overseer.InitReasonSpawnFailed
	}
	return res
}

func (r *planRun) command(c *clawkerdv1.Command, tag string) stepResult {
	res, _ := r.await(c, tag, builtinStepTimeout)
	if res.noShell {
		res.noShell = false
		res.reason = overseer.InitReasonSpawnFailed
	}
	return res
}

// await sends c and reads until its Done or Error, returning the outcome
// and the (bounded) output tail. A ShellCommand gets CloseStdin at once:
// no init command takes input, and some clawkerd implementations finish a
// command only once its stdin is closed. The wait is bounded by
// e.stepWait(timeout): a peer that never answers fails the step with
// reason timeout (the command is SIGKILLed) and leaves the Session up.
// Dialer.register has the same send-then-Recv-until-id shape but is kept
// apart on purpose: its timeout tears the stream down (a Session that
// cannot register must end), this one keeps it (a slow step must not), and
// only this one collects output and logs strays; one helper would need
// both policies as parameters and hide which one applies.
func (r *planRun) await(c *clawkerdv1.Command, tag string, timeout time.Duration) (stepResult, string) {
	id := r.nextID(tag)
	c.CommandId = id
	if err := r.stream.Send(c); err != nil {
		return r.transport("send", err), ""
	}
	if c.GetShell() != nil {
		if err := r.stream.Send(&clawkerdv1.Command{CommandId: id, Payload: &clawkerdv1.Command_CloseStdin{
			CloseStdin: &clawkerdv1.CloseStdin{}}}); err != nil {
			return r.transport("send", err), ""
		}
	}
	bound := r.e.stepWait(timeout)
	deadline := time.Now().Add(bound)
	var tail tailBuffer
	for {
		resp, err := r.stream.RecvWithin(time.Until(deadline))
		if errors.Is(err, errRecvWait) {
			return r.unanswered(c, id, bound, tail.String()), tail.String()
		}
		if err != nil {
			return r.transport("recv", err), tail.String()
		}
		if resp.GetCommandId() != id {
			r.log.Warn().Str("event", "agent_init_stray_response").Str("command_id", resp.GetCommandId()).
				Msg("response for a command the executor did not send; ignored")
			continue
		}
		switch p := resp.GetPayload().(type) {
		case *clawkerdv1.Response_Output:
			tail.Write(p.Output.GetData())
		case *clawkerdv1.Response_Done:
			code := p.Done.GetFinalExitCode()
			if code == 0 {
				return stepResult{}, tail.String()
			}
			return stepResult{exit: code, reason: overseer.InitReasonNonZeroExit,
				detail: detail(code, tail.String())}, tail.String()
		case *clawkerdv1.Response_Error:
			res := stepResult{exit: -1, detail: fmt.Sprintf("%s: %s", p.Error.GetCode(), p.Error.GetMessage())}
			switch p.Error.GetCode() {
			case clawkerdv1.ErrorCode_ERROR_CODE_SPAWN_FAILED:
				res.reason, res.noShell = overseer.InitReasonSpawnFailed, true
			case clawkerdv1.ErrorCode_ERROR_CODE_TIMEOUT:
				res.reason = overseer.InitReasonTimeout
				if t := tail.String(); t != "" {
					res.detail += "; output: " + t
				}
			default:
				res.reason = overseer.InitReasonRemoteError
			}
			return res, tail.String()
		}
	}
}

// unanswered fails a command whose Done or Error did not come within
// bound. A shell command is SIGKILLed (best effort) so it does not run on
// unseen; its late replies are dropped by the Session as strays.
func (r *planRun) unanswered(c *clawkerdv1.Command, id string, bound time.Duration, tail string) stepResult {
	r.log.Warn().Str("event", "agent_init_step_unanswered").Str("command_id", id).Dur("waited", bound).
		Msg("no Done or Error in time; step failed, session kept")
	if c.GetShell() != nil {
		if err := r.stream.Send(signalCommand(id, int32(syscall.SIGKILL))); err != nil {
			r.log.Warn().Str("event", "agent_init_kill_failed").Str("command_id", id).Err(err).Msg("SIGKILL not sent")
		}
	}
	d := fmt.Sprintf("no reply within %s", bound.Round(time.Millisecond))
	if t := strings.TrimSpace(tail); t != "" {
		d += "; output: " + t
	}
	return stepResult{exit: -1, reason: overseer.InitReasonTimeout, detail: d}
}

func (r *planRun) transport(op string, err error) stepResult {
	if r.ctx.Err() != nil {
		return stepResult{exit: -1, reason: overseer.InitReasonCancelled, detail: r.ctx.Err().Error()}
	}
	return stepResult{exit: -1, reason: overseer.InitReasonTransport, detail: fmt.Sprintf("%s: %v", op, err)}
}

func detail(code int32, out string) string {
	out = strings.TrimSpace(out)
	if out == "" {
		return fmt.Sprintf("exit code %d", code)
	}
	return fmt.Sprintf("exit code %d: %s", code, out)
}

// tailBuffer keeps the last detailOutputMax bytes written.
type tailBuffer struct {
	b         []byte
	truncated bool
}

func (t *tailBuffer) Write(p []byte) {
	t.b = append(t.b, p...)
	if over := len(t.b) - detailOutputMax; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
		t.truncated = true
	}
}

func (t *tailBuffer) String() string {
	if t.truncated {
		return "…" + string(t.b)
	}
	return string(t.b)
}
