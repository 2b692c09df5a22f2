// Stock mode (MACVTAP_LAB_STOCK=1): the launch contract of the official
// pulumi-language-python of the pinned engine (v3.274.1), so that the project's
// programs are tested the way users of the official CLI run them.
//
// What it keeps from the official host, and how:
//   - venv resolution, venv activation and the Python command come from the
//     upstream `sdk/v3/python/toolchain` package itself (the pinned module), not
//     from a copy: `virtualenv` is relative to the project root, a missing or
//     broken venv is an error before the program starts, PATH gets the venv's
//     bin first, VIRTUAL_ENV is set, PYTHONHOME is dropped, PULUMI_PYTHON_CMD is
//     only used when no venv is configured; uv.lock / poetry.lock pick those
//     toolchains.
//   - the program runs in the host's own working directory (the engine starts
//     the host in the program directory, the `main:` of Pulumi.yaml) with the
//     entry point exactly as the engine names it ("." for a directory);
//   - the executor is the pulumi-language-python-exec beside this binary (never
//     one on PATH);
//   - the environment is the host's plus PULUMI_CONFIG (when there is config)
//     and PULUMI_CONFIG_SECRET_KEYS, nothing else;
//   - flags are passed only when non-empty; exit code 32 means "already
//     reported"; Cancel sends SIGINT and kills after 5 s;
//   - the host ends only through its engine health check, every 5 minutes:
//     after the engine is killed it lingers up to that long.
//
// Not reproduced (not used by this project's programs): the typechecker option
// (refused with an error), debugger attach, tracing spans, plugins written in
// Python (RunPlugin), code generation, and the pulumi-plugin.json lookup of
// GetRequiredPackages (packages named pulumi-* are reported, as upstream does
// for packages without that file).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	pbempty "google.golang.org/protobuf/types/known/emptypb"

	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	"github.com/pulumi/pulumi/sdk/v3/go/common/version"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"github.com/pulumi/pulumi/sdk/v3/python/toolchain"
)

// stockEnv selects stock mode when set to "1".
const stockEnv = "MACVTAP_LAB_STOCK"

// engineHealthInterval is the official host's health-check period.
const engineHealthInterval = 5 * time.Minute

type stockHost struct {
	pulumirpc.UnimplementedLanguageRuntimeServer
	engineAddress string
	execPath      string
	cancelCtx     context.Context
	cancelFunc    context.CancelFunc
}

// serveStock runs the host the way the official one does; it returns when the
// server stops (interrupt, or the engine failed a health check).
func serveStock(engineAddress, givenExecutor string) error {
	execPath := givenExecutor
	if execPath == "" {
		self, err := os.Executable()
		if err != nil {
			return fmt.Errorf("could not determine current executable: %w", err)
		}
		execPath = filepath.Join(filepath.Dir(self), executorName)
		if _, err := os.Stat(execPath); os.IsNotExist(err) {
			return fmt.Errorf("missing executor %s: %w", execPath, err)
		}
	}
	ctx, cancel := signalContext()
	cancelChannel := make(chan bool)
	go func() {
		<-ctx.Done()
		cancel()
		close(cancelChannel)
	}()
	if engineAddress != "" {
		if err := rpcutil.Healthcheck(ctx, engineAddress, engineHealthInterval, cancel); err != nil {
			return fmt.Errorf("could not start health check host RPC server: %w", err)
		}
	}
	runCtx, runCancel := context.WithCancel(context.Background())
	h := &stockHost{engineAddress: engineAddress, execPath: execPath, cancelCtx: runCtx, cancelFunc: runCancel}
	handle, err := rpcutil.ServeWithOptions(rpcutil.ServeOptions{
		Cancel: cancelChannel,
		Init: func(s *grpc.Server) error {
			pulumirpc.RegisterLanguageRuntimeServer(s, h)
			return nil
		},
		Options: rpcutil.OpenTracingServerInterceptorOptions(nil),
	})
	if err != nil {
		return fmt.Errorf("could not start language host RPC server: %w", err)
	}
	fmt.Printf("%d\n", handle.Port)
	if err := <-handle.Done; err != nil {
		return fmt.Errorf("language host RPC stopped serving: %w", err)
	}
	return nil
}

// pythonOptions reads the `runtime.options` of Pulumi.yaml as the official host does.
func pythonOptions(info *pulumirpc.ProgramInfo) (toolchain.PythonOptions, error) {
	opts := toolchain.PythonOptions{Root: info.GetRootDirectory(), ProgramDir: info.GetProgramDirectory()}
	raw := map[string]any{}
	if info.GetOptions() != nil {
		raw = info.GetOptions().AsMap()
	}
	if v, ok := raw["virtualenv"]; ok {
		s, isString := v.(string)
		if !isString {
			return opts, errors.New("virtualenv option must be a string")
		}
		opts.Virtualenv = s
	}
	if v, ok := raw["typechecker"]; ok {
		return opts, fmt.Errorf("stock mode does not reproduce the typechecker option (%v): remove it to test here", v)
	}
	if v, ok := raw["toolchain"]; ok {
		s, isString := v.(string)
		if !isString {
			return opts, errors.New("toolchain option must be a string")
		}
		switch s {
		case "pip":
			opts.Toolchain = toolchain.Pip
		case "poetry":
			opts.Toolchain = toolchain.Poetry
		case "uv":
			opts.Toolchain = toolchain.Uv
		default:
			return opts, fmt.Errorf("unsupported toolchain option: %s", s)
		}
	}
	return opts, nil
}

func resolveToolchain(info *pulumirpc.ProgramInfo) (toolchain.Toolchain, error) {
	opts, err := pythonOptions(info)
	if err != nil {
		return nil, err
	}
	return toolchain.ResolveToolchain(opts)
}

func (h *stockHost) Handshake(_ context.Context, req *pulumirpc.LanguageHandshakeRequest) (*pulumirpc.LanguageHandshakeResponse, error) {
	h.engineAddress = req.GetEngineAddress()
	ctx, cancel := signalContext()
	if err := rpcutil.Healthcheck(ctx, h.engineAddress, engineHealthInterval, cancel); err != nil {
		return nil, fmt.Errorf("could not start health check host RPC server: %w", err)
	}
	return &pulumirpc.LanguageHandshakeResponse{}, nil
}

func (h *stockHost) GetPluginInfo(context.Context, *pbempty.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: version.Version}, nil
}

func (h *stockHost) GetRequiredPlugins(context.Context, *pulumirpc.GetRequiredPluginsRequest) (*pulumirpc.GetRequiredPluginsResponse, error) {
	return nil, status.Errorf(codes.Unimplemented, "method GetRequiredPlugins not implemented")
}

// GetRequiredPackages makes sure the venv exists (creating it, as upstream does, when
// the option names a missing or empty directory) and lists its packages with pip.
func (h *stockHost) GetRequiredPackages(ctx context.Context, req *pulumirpc.GetRequiredPackagesRequest) (*pulumirpc.GetRequiredPackagesResponse, error) {
	tc, err := resolveToolchain(req.GetInfo())
	if err != nil {
		return nil, err
	}
	if err := tc.EnsureVenv(ctx, req.GetInfo().GetProgramDirectory(), false, true, os.Stderr, os.Stderr); err != nil {
		return nil, err
	}
	deps, err := tc.ListPackages(ctx, true)
	if err != nil {
		return nil, err
	}
	packages := []*pulumirpc.PackageDependency{}
	for _, dep := range deps {
		if !strings.HasPrefix(dep.Name, "pulumi-") || dep.Name == "pulumi-policy" || dep.Name == "pulumi-esc-sdk" {
			continue
		}
		v := strings.SplitN(dep.Version, "+", 2)[0]
		if v == "" {
			continue
		}
		packages = append(packages, &pulumirpc.PackageDependency{
			Name: strings.TrimPrefix(dep.Name, "pulumi-"), Version: "v" + strings.TrimPrefix(v, "v"), Kind: "resource",
		})
	}
	return &pulumirpc.GetRequiredPackagesResponse{Packages: packages}, nil
}

func (h *stockHost) GetProgramDependencies(ctx context.Context, req *pulumirpc.GetProgramDependenciesRequest) (*pulumirpc.GetProgramDependenciesResponse, error) {
	tc, err := resolveToolchain(req.GetInfo())
	if err != nil {
		return nil, err
	}
	deps, err := tc.ListPackages(ctx, req.GetTransitiveDependencies())
	if err != nil {
		return nil, err
	}
	out := make([]*pulumirpc.DependencyInfo, 0, len(deps))
	for _, dep := range deps {
		out = append(out, &pulumirpc.DependencyInfo{Name: dep.Name, Version: dep.Version})
	}
	return &pulumirpc.GetProgramDependenciesResponse{Dependencies: out}, nil
}

func (h *stockHost) About(ctx context.Context, req *pulumirpc.AboutRequest) (*pulumirpc.AboutResponse, error) {
	info := req.GetInfo()
	if info == nil {
		info = &pulumirpc.ProgramInfo{}
	}
	tc, err := resolveToolchain(info)
	if err != nil {
		return nil, err
	}
	about, err := tc.About(ctx)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.AboutResponse{Executable: about.PythonExecutable, Version: about.PythonVersion.String()}, nil
}

// InstallDependencies is what `pulumi install` and `pulumi new` call: create the venv
// named by the options and pip-install requirements.txt into it.
func (h *stockHost) InstallDependencies(req *pulumirpc.InstallDependenciesRequest, server pulumirpc.LanguageRuntime_InstallDependenciesServer) error {
	tc, err := resolveToolchain(req.GetInfo())
	if err != nil {
		return err
	}
	closer, stdout, stderr, err := rpcutil.MakeInstallDependenciesStreams(server, req.GetIsTerminal())
	if err != nil {
		return err
	}
	defer closer.Close()
	fmt.Fprint(stdout, "Installing dependencies...\n\n")
	if err := tc.InstallDependencies(server.Context(), req.GetInfo().GetProgramDirectory(),
		req.GetUseLanguageVersionTools(), true, stdout, stderr); err != nil {
		return err
	}
	fmt.Fprint(stdout, "Finished installing dependencies\n\n")
	return closer.Close()
}

func (h *stockHost) Cancel(context.Context, *pbempty.Empty) (*pbempty.Empty, error) {
	h.cancelFunc()
	return &pbempty.Empty{}, nil
}

// stockArguments are the executor's flags, each only when non-empty, then the entry
// point as the engine names it, then the program's arguments.
func (h *stockHost) stockArguments(req *pulumirpc.RunRequest) []string {
	var args []string
	add := func(k, v string) {
		if v != "" {
			args = append(args, "--"+k, v)
		}
	}
	add("monitor", req.GetMonitorAddress())
	add("engine", h.engineAddress)
	add("project", req.GetProject())
	add("root_directory", req.GetInfo().GetRootDirectory())
	add("stack", req.GetStack())
	add("pwd", req.GetPwd())
	add("dry_run", strconv.FormatBool(req.GetDryRun()))
	add("parallel", strconv.Itoa(int(req.GetParallel())))
	add("organization", req.GetOrganization())
	args = append(args, req.GetInfo().GetEntryPoint())
	return append(args, req.GetArgs()...)
}

func (h *stockHost) Run(ctx context.Context, req *pulumirpc.RunRequest) (*pulumirpc.RunResponse, error) {
	if req.GetAttachDebugger() {
		return &pulumirpc.RunResponse{Error: "stock mode does not reproduce debugger attach"}, nil
	}
	args := append([]string{h.execPath}, h.stockArguments(req)...)
	var config string
	if req.GetConfig() != nil {
		data, err := json.Marshal(req.GetConfig())
		if err != nil {
			return nil, fmt.Errorf("failed to serialize configuration: %w", err)
		}
		config = string(data)
	}
	secretKeys := "[]"
	if req.GetConfigSecretKeys() != nil {
		data, err := json.Marshal(req.GetConfigSecretKeys())
		if err != nil {
			return nil, fmt.Errorf("failed to serialize configuration secret keys: %w", err)
		}
		secretKeys = string(data)
	}

	tc, err := resolveToolchain(req.GetInfo())
	if err != nil {
		return nil, err
	}
	if err := tc.ValidateVenv(ctx); err != nil {
		return nil, err
	}
	runCtx, runCancel := context.WithCancel(h.cancelCtx)
	defer runCancel()
	context.AfterFunc(ctx, runCancel)
	cmd, err := tc.Command(runCtx, args...)
	if err != nil {
		return nil, err
	}
	cmd.Cancel = func() error {
		if err := cmd.Process.Signal(os.Interrupt); err != nil {
			return cmd.Process.Kill()
		}
		return nil
	}
	cmd.WaitDelay = 5 * time.Second
	cmd.Stdout = os.Stdout
	cmd.Stderr = os.Stderr
	env := cmd.Env
	if env == nil {
		env = os.Environ()
	}
	if config != "" {
		env = append(env, "PULUMI_CONFIG="+config)
	}
	cmd.Env = append(env, "PULUMI_CONFIG_SECRET_KEYS="+secretKeys)

	if err := cmd.Run(); err != nil {
		_ = os.Stdout.Sync()
		_ = os.Stderr.Sync()
		var exitErr *exec.ExitError
		if !errors.As(err, &exitErr) {
			return &pulumirpc.RunResponse{Error: fmt.Sprintf(
				"problem executing program (could not run language executor): %v", err)}, nil
		}
		ws, ok := exitErr.Sys().(syscall.WaitStatus)
		switch {
		case !ok || ws.ExitStatus() == 0:
			return &pulumirpc.RunResponse{Error: fmt.Sprintf("program exited unexpectedly: %v", exitErr)}, nil
		case ws.ExitStatus() == exitAfterUserMessage:
			return &pulumirpc.RunResponse{Bail: true}, nil
		default:
			return &pulumirpc.RunResponse{Error: fmt.Sprintf(
				"program exited with non-zero exit code: %d", ws.ExitStatus())}, nil
		}
	}
	return &pulumirpc.RunResponse{}, nil
}
