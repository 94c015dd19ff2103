package cli

import (
	"context"

	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/internal/agentnet"
)

// The Docker engine calls the CLI makes, one small interface per call
// (consumer-owned, as SPIRE's docker workload attestor does). Each
// command's logic takes the composition it uses below, so a unit test
// fakes just that boundary and can assert what the command asked Docker.

type containerLister interface {
	ContainerList(ctx context.Context, options mobyclient.ContainerListOptions) (mobyclient.ContainerListResult, error)
}

type containerInspector interface {
	ContainerInspect(ctx context.Context, containerID string, options mobyclient.ContainerInspectOptions) (mobyclient.ContainerInspectResult, error)
}

type containerCreator interface {
	ContainerCreate(ctx context.Context, options mobyclient.ContainerCreateOptions) (mobyclient.ContainerCreateResult, error)
}

type containerRemover interface {
	ContainerRemove(ctx context.Context, containerID string, options mobyclient.ContainerRemoveOptions) (mobyclient.ContainerRemoveResult, error)
}

type containerStarter interface {
	ContainerStart(ctx context.Context, containerID string, options mobyclient.ContainerStartOptions) (mobyclient.ContainerStartResult, error)
}

type containerStopper interface {
	ContainerStop(ctx context.Context, containerID string, options mobyclient.ContainerStopOptions) (mobyclient.ContainerStopResult, error)
}

type containerRestarter interface {
	ContainerRestart(ctx context.Context, containerID string, options mobyclient.ContainerRestartOptions) (mobyclient.ContainerRestartResult, error)
}

type containerLogger interface {
	ContainerLogs(ctx context.Context, containerID string, options mobyclient.ContainerLogsOptions) (mobyclient.ContainerLogsResult, error)
}

type containerCopier interface {
	CopyToContainer(ctx context.Context, containerID string, options mobyclient.CopyToContainerOptions) (mobyclient.CopyToContainerResult, error)
}

type containerAttacher interface {
	ContainerAttach(ctx context.Context, containerID string, options mobyclient.ContainerAttachOptions) (mobyclient.ContainerAttachResult, error)
	ContainerWait(ctx context.Context, containerID string, options mobyclient.ContainerWaitOptions) mobyclient.ContainerWaitResult
}

type imageInspector interface {
	ImageInspect(ctx context.Context, imageID string, inspectOpts ...mobyclient.ImageInspectOption) (mobyclient.ImageInspectResult, error)
}

type imagePuller interface {
	ImagePull(ctx context.Context, refStr string, options mobyclient.ImagePullOptions) (mobyclient.ImagePullResponse, error)
}

// cpImageDocker imports and prunes the CP image (cpimage.go).
type cpImageDocker interface {
	imageInspector
	ImageImport(ctx context.Context, source mobyclient.ImageImportSource, ref string, options mobyclient.ImageImportOptions) (mobyclient.ImageImportResult, error)
	ImageList(ctx context.Context, options mobyclient.ImageListOptions) (mobyclient.ImageListResult, error)
	ImageRemove(ctx context.Context, imageID string, options mobyclient.ImageRemoveOptions) (mobyclient.ImageRemoveResult, error)
}

// volumeDocker is what state volumes and the CP's data volume need.
type volumeDocker interface {
	VolumeCreate(ctx context.Context, options mobyclient.VolumeCreateOptions) (mobyclient.VolumeCreateResult, error)
	VolumeInspect(ctx context.Context, volumeID string, options mobyclient.VolumeInspectOptions) (mobyclient.VolumeInspectResult, error)
	volumeListRemover
}

type volumeListRemover interface {
	VolumeList(ctx context.Context, options mobyclient.VolumeListOptions) (mobyclient.VolumeListResult, error)
	VolumeRemove(ctx context.Context, volumeID string, options mobyclient.VolumeRemoveOptions) (mobyclient.VolumeRemoveResult, error)
}

// netDocker is what the agent and CP networks need (agentnet plus the
// agent-net CP probe).
type netDocker interface {
	agentnet.Docker
	containerInspector
}

// rmDocker is what clawker rm uses.
type rmDocker interface {
	containerLister
	containerRemover
	agentnet.Docker
	volumeListRemover
}

// lifecycleDocker is what clawker stop, start and restart use.
type lifecycleDocker interface {
	containerLister
	containerStopper
	containerStarter
	containerRestarter
}

// logsDocker is what clawker logs uses.
type logsDocker interface {
	containerLister
	containerInspector
	containerLogger
}

// cpDocker is what clawker cp up, down, status and logs use.
type cpDocker interface {
	cpImageDocker
	netDocker
	volumeDocker
	containerCreator
	containerRemover
	containerStarter
	containerStopper
	containerLogger
	containerCopier
	infoReader
	DaemonHost() string
}

// infoReader tells cp up whether the engine is Docker Desktop (its
// ssh-agent socket lives in the VM).
type infoReader interface {
	Info(ctx context.Context, options mobyclient.InfoOptions) (mobyclient.SystemInfoResult, error)
}

// runDocker is what clawker run uses.
type runDocker interface {
	imageInspector
	imagePuller
	netDocker
	containerCreator
	containerRemover
	containerStarter
	containerCopier
	containerAttacher
	CopyFromContainer(ctx context.Context, containerID string, options mobyclient.CopyFromContainerOptions) (mobyclient.CopyFromContainerResult, error)
}

// dockerAPI is the client the factory returns: every command's interface
// plus the connection's own calls. The real *mobyclient.Client satisfies it.
type dockerAPI interface {
	runDocker
	cpDocker
	rmDocker
	lifecycleDocker
	logsDocker
	Ping(ctx context.Context, options mobyclient.PingOptions) (mobyclient.PingResult, error)
	Close() error
}

var _ dockerAPI = (*mobyclient.Client)(nil)

// probeDocker reads a file of an image from a never-started container
// (state.go).
type probeDocker interface {
	containerCreator
	containerRemover
	CopyFromContainer(ctx context.Context, containerID string, options mobyclient.CopyFromContainerOptions) (mobyclient.CopyFromContainerResult, error)
}
