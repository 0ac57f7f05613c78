package org.apache.beam.runners.flink.translation.wrappers.streaming;

import java.util.concurrent.LinkedBlockingQueue;
import org.apache.beam.sdk.fn.data.FnDataReceiver;

/**
 * A receiver named like those Flink's streaming operator ({@code ExecutableStageDoFnOperator})
 * gives a bundle, which hand each output over to a queue: xinfer's {@code SdkHarnessClient} lets
 * such receivers take a bundle's outputs from its drainer thread ({@code SdkHarnessClientTest}).
 */
public class ExecutableStageDoFnOperator$TestQueueReceiver implements FnDataReceiver<String> {
  public final LinkedBlockingQueue<String> received = new LinkedBlockingQueue<>();

  @Override
  public void accept(String output) throws InterruptedException {
    received.put(output);
  }
}
