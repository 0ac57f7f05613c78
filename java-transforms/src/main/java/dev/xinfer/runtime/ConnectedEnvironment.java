package dev.xinfer.runtime;

import org.apache.beam.model.pipeline.v1.RunnerApi.Environment;
import org.apache.beam.runners.fnexecution.control.InstructionRequestHandler;
import org.apache.beam.runners.fnexecution.environment.RemoteEnvironment;

/** An environment whose SDK harness has connected; subclasses say what closing it stops. */
abstract class ConnectedEnvironment implements RemoteEnvironment {
  private final Environment environment;
  private final InstructionRequestHandler handler;

  ConnectedEnvironment(Environment environment, InstructionRequestHandler handler) {
    this.environment = environment;
    this.handler = handler;
  }

  @Override
  public final Environment getEnvironment() {
    return environment;
  }

  @Override
  public final InstructionRequestHandler getInstructionRequestHandler() {
    return handler;
  }
}
